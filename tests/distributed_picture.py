"""Run by tests/test_distributed.py, alone or as each of torchrun's processes: `python distributed_picture.py FOLDER`.

Makes a small picture with nst.stylize (set up as the CLI sets it up under torchrun) and saves, per
process, the float picture it ends with and how many VGG passes it ran; then one evaluation of the
objective, as the engine's closure makes it, at a fixed picture: its loss terms and the picture's
gradient, and how many tiles it was summed over. Alone, it also saves that evaluation in float64 with direct convolutions, the reference
that tells how far float32 itself is from the exact values. All in FOLDER/rank{R}.pt.
"""

import sys
from dataclasses import replace
from pathlib import Path

import torch

from nst import Settings, distributed, images, stylize
from nst.objective import Objective
from nst.runtime import Runtime
from nst.vgg import VGG19Features, load_model
from nst.weights import load_weights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONTENT, STYLE = EXAMPLES / "chelsea.jpg", EXAMPLES / "starry_night.jpg"
SETTINGS = Settings(size=128, tile="64", steps=5, precision="fp32", multiscale=False, frame_interval=3600)
# With a total variation weight, so that every sum the processes share has a part in the evaluation.
EVALUATION = replace(SETTINGS, tv_weight=1.0)

passes = 0
network = VGG19Features.forward


def counted(*args, **kwargs):  # instrumentation: the real pass runs
    global passes
    passes += 1
    return network(*args, **kwargs)


def evaluation(model: VGG19Features, runtime: Runtime, dtype: torch.dtype) -> dict:
    """One evaluation of the objective at the photo half mixed with seeded noise (at the photo
    itself the content term and its gradient are 0): the loss terms and the picture's gradient."""
    content = images.load_tensor(images.open_image(CONTENT), EVALUATION.size, "cpu").to(dtype)
    style = images.load_style_tensor(images.open_image(STYLE), EVALUATION.size, "cpu").to(dtype)
    objective = Objective(model, content, [style], EVALUATION.validated(), runtime)
    noise = torch.rand(content.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
    picture = (0.5 * content + 0.5 * noise).contiguous().requires_grad_(True)
    terms = objective.loss_and_gradient(picture)
    return {"terms": {name: float(value) for name, value in terms.items()}, "gradient": picture.grad.detach().clone(),
            "tiles": len(objective.tiles)}


VGG19Features.forward = counted
distributed.start(torch.device("cpu"))
final = {}
for _ in stylize(CONTENT, STYLE, SETTINGS, on_step=lambda step, picture: final.update(picture=picture.clone())):
    pass
saved = {"picture": final["picture"], "passes": passes, "processes": distributed.world_size(),
         "float32": evaluation(load_model(), Runtime.for_settings(EVALUATION), torch.float32)}
if distributed.world_size() == 1:
    exact = VGG19Features(load_weights(EVALUATION.weights), EVALUATION.pooling).double().to(memory_format=torch.channels_last)
    saved["float64"] = evaluation(exact, Runtime(torch.device("cpu"), "fp32", winograd=False, cuda_graphs=False), torch.float64)
torch.save(saved, Path(sys.argv[1]) / f"rank{distributed.rank()}.pt")
distributed.stop()
