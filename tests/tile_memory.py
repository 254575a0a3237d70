"""Run by tests/test_tiles.py, each in a fresh process: `python tile_memory.py HEIGHT WIDTH TILE`.

Builds the Objective of a HEIGHT x WIDTH crop of the example photo with `tile` set to TILE, then
takes one loss and gradient, and prints as JSON, in bytes of resident memory, what the process held
with torch and the network loaded (`base`), with the Objective built (`before`) and at the
evaluation's peak (`peak`), and the number of tiles (0: the whole picture at once).

Every block over 128 KB is mapped fresh and handed back when freed (`limit_heap_growth`, the CLI's
policy for a large untiled picture), so the peak is that of the tensors alive at once, which is what
the tile decides; what freed memory a process keeps besides is the allocator policy's (nst/runtime.py).
"""

import gc
import json
import sys
from pathlib import Path

import torch

from nst import Settings, images, open_image
from nst.objective import Objective
from nst.memory import limit_heap_growth
from nst.runtime import Runtime
from nst.vgg import load_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Layers to relu3_1 read a margin of 12 px around a tile (relu5_1: 80 px), so that tiles of a few
# hundred px cost little more than the whole picture; the passes and their sums are the same code.
LAYERS = {"style_layers": ("relu1_1", "relu2_1", "relu3_1"), "style_layer_weights": (1.0, 1.0, 1.0), "content_layer": "relu3_1"}
THREADS = 2  # oneDNN's scratch memory grows with the threads: the same count on every machine


def resident_bytes(field: str = "VmRSS") -> int:
    """This process's resident memory now (VmRSS), or its peak (VmHWM). getrusage's ru_maxrss would
    also count the peak of the process that started this one, which it holds from before the exec."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(f"{field}:"))


def reset_peak() -> None:
    """Make the peak resident memory (VmHWM) start again from now (Linux 4.0 and later); where the
    kernel cannot, the peak stays this process's so far, which can only read higher."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def main(height: int, width: int, tile: str) -> dict:
    limit_heap_growth()
    torch.set_num_threads(THREADS)
    settings = Settings(size=max(height, width), tile=tile, precision="fp32", **LAYERS).validated()
    photo = open_image(EXAMPLES / "chelsea.jpg")
    content = images.load_tensor(photo, max(width, round(height * photo.width / photo.height) + 1), "cpu")
    content = content[..., :height, :width].contiguous()
    style = images.load_tensor(open_image(EXAMPLES / "starry_night.jpg"), 128, "cpu")
    model = load_model()
    gc.collect()
    base = resident_bytes()
    objective = Objective(model, content, [style], settings, Runtime.for_settings(settings))
    picture = content.clone().requires_grad_(True)
    gc.collect()
    before = resident_bytes()
    reset_peak()
    objective.loss_and_gradient(picture)
    peak = resident_bytes("VmHWM")
    return {"base": base, "before": before, "peak": peak, "tiles": len(objective.tiles) if objective.tiles else 0}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
