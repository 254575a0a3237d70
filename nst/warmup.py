"""Warming a server up: the first request starts at full speed and knows its time left."""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from PIL import Image
from torch import Tensor

from . import run
from .engine import stylize
from .optimizers import make_optimizer
from .schedule import MIN_SCALE_SIDE
from .settings import OPTIMIZERS, Settings
from .timeleft import measure_fixed_work, step_work


def warm_up(settings: Settings = Settings()) -> None:
    """Load the network, its Winograd filters and the optimisers' code now (the first torch optimiser
    made in a process imports torch._dynamo), so that the first request starts at full speed; and time
    the steps of a run's two coarse scales, so that the next runs' first frames know how much dearer a
    larger step is on this machine (`nst.timeleft`)."""
    settings = settings.validated()
    for name in OPTIMIZERS:
        make_optimizer(name, torch.zeros(1, requires_grad=True))
    side = 3 * MIN_SCALE_SIDE  # scales of 128, 222 and 384 px
    picture = Image.effect_noise((side, side * 2 // 3), 64).convert("RGB")  # 3:2, the commonest photo's shape
    coarse = run.scale_settings(settings, all_layers=False)
    ends: dict[tuple[int, int], list[float]] = {}  # the moments each size's steps ended

    def timed(_, picture: Tensor) -> None:
        ends.setdefault(tuple(picture.shape[-2:]), []).append(time.perf_counter())

    for _ in stylize(picture, picture, replace(settings, size=side, steps=18, frame_interval=3600), on_step=timed):
        pass
    # each coarse size's steps after its second: the first warms up the scale's buffers, a frame follows the run's first
    measure_fixed_work({step_work(*size, run.deepest(coarse)): (times[-1] - times[1]) / (len(times) - 2)
                        for size, times in ends.items() if max(size) < side and len(times) > 2})
