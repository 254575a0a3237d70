"""Run by tests/test_distributed.py, alone or as each of torchrun's processes: `python distributed_picture.py FOLDER`.

Makes a small picture with nst.stylize (set up as the CLI sets it up under torchrun) and saves, per
process, the float picture it ends with and how many VGG passes it ran: FOLDER/rank{R}.pt.
"""

import sys
from pathlib import Path

import torch

from nst import Settings, distributed, stylize
from nst.vgg import VGG19Features

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SETTINGS = Settings(size=128, tile="64", steps=5, precision="fp32", multiscale=False, frame_interval=3600)

passes = 0
network = VGG19Features.forward


def counted(*args, **kwargs):  # instrumentation: the real pass runs
    global passes
    passes += 1
    return network(*args, **kwargs)


VGG19Features.forward = counted
distributed.start(torch.device("cpu"))
final = {}
for _ in stylize(EXAMPLES / "chelsea.jpg", EXAMPLES / "starry_night.jpg", SETTINGS,
                 on_step=lambda step, picture: final.update(picture=picture.clone())):
    pass
torch.save({"picture": final["picture"], "passes": passes, "processes": distributed.world_size()},
           Path(sys.argv[1]) / f"rank{distributed.rank()}.pt")
distributed.stop()
