"""Coarse to fine: the sizes a picture is optimised at, their shares of the steps, and time left."""

from __future__ import annotations

import math

MIN_SCALE_SIDE = 128
# ... and the coarsest scale's short side at least this: a 6:1 picture starts at 384x64, not 128x21.
MIN_SCALE_SHORT_SIDE = 64
# Each scale gets this many times the steps of the next finer one.
SCALE_SHARE_RATIO = 1.8
# A step on twice the side (4 times the pixels) takes this many times as long: measured on two cores
# with the defaults, 2.4 from 128 to 256 px and 2.9 to 3.3 from 256 to 512 px.
STEP_COST_PER_DOUBLING = 2.8


def scale_schedule(size: int, steps: int, multiscale: bool, aspect: float = 1.0) -> list[tuple[int, int]]:
    """[(long side, steps)] coarse to fine, ending at `size`; the steps add up to `steps`.

    The sides grow geometrically from MIN_SCALE_SIDE, by at most 2x a scale (128, 256, 512 for 512;
    128, 222, 384 for 384); for a picture with a long side `aspect` times its short side, from where
    the short side is MIN_SCALE_SHORT_SIDE if that is larger (384, 512 at 6:1). Coarse scales cost a
    fraction as much per step as the next, so they take the larger share of the steps.
    """
    coarsest = max(MIN_SCALE_SIDE, math.ceil(MIN_SCALE_SHORT_SIDE * aspect))
    count = math.ceil(math.log2(size / coarsest)) + 1 if multiscale and size > coarsest else 1
    sides = [round(size * (coarsest / size) ** ((count - 1 - i) / (count - 1))) for i in range(count - 1)] + [size]
    sides = sides[-steps:]
    shares = [SCALE_SHARE_RATIO**i for i in range(len(sides) - 1, -1, -1)]
    counts = [int(steps * share / sum(shares)) for share in shares]
    counts[-1] = steps - sum(counts[:-1])
    return [(side, n) for side, n in zip(sides, counts) if n > 0]


def estimate_seconds_left(schedule: list[tuple[int, int]], scale_index: int, scale_step: int, scale_seconds: float) -> float:
    """Estimated seconds to the end of `schedule`, `scale_step` steps and `scale_seconds` into a scale.

    Steps on a scale with twice the side are taken to cost STEP_COST_PER_DOUBLING times as much.
    """
    side, steps = schedule[scale_index]
    per_step = scale_seconds / scale_step
    later = sum(n * STEP_COST_PER_DOUBLING ** math.log2(other / side) for other, n in schedule[scale_index + 1:])
    return per_step * (steps - scale_step + later)
