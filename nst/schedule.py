"""Coarse to fine: the sizes a picture is optimised at, their shares of the steps, and time left."""

from __future__ import annotations

import math

MIN_SCALE_SIDE = 128
# ... and the coarsest scale's short side at least this: a 6:1 picture starts at 384x64, not 128x21.
MIN_SCALE_SHORT_SIDE = 64
# Each scale gets this many times the steps of the next finer one.
SCALE_SHARE_RATIO = 1.8
# A step takes a + b * pixels seconds. Until a run has timed two scales, a is taken to be the cost of
# this many pixels (measured in the app on two AVX2 cores, 512 px at 3:2: a 256 px step 2.3 times as
# dear as a 128 px one, a 512 px step 3.2 times a 256 px one); from then on a and b are fitted to the
# last two scales.
STEP_OVERHEAD_PIXELS = 15_000
# Computing a scale's targets (the photo's and the painting's features, no gradient) costs about this
# many of its steps.
TARGETS_IN_STEPS = 0.7
# A scale's own pace is trusted from this many steps on; before that, the last scale's pace predicts it.
# (Paces leave out a scale's first step, which also warms up its buffers.)
STEPS_TO_TRUST_A_PACE = 4


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


def estimate_seconds_left(schedule: list[tuple[int, int]], scale_index: int, scale_step: int, pace: float,
                          aspect: float = 1.0, finished: list[tuple[int, float]] = ()) -> float:
    """Estimated seconds to the end of `schedule`, `scale_step` steps into a scale whose steps take
    `pace` seconds, for a picture whose long side is `aspect` times its short side; `finished` holds
    (long side, seconds per step) of the scales done so far (see STEP_OVERHEAD_PIXELS)."""
    side, steps = schedule[scale_index]

    def pixels(long_side: int) -> float:
        return long_side * long_side / aspect

    def through_overhead(known_side: int, known_pace: float):
        return lambda long_side: known_pace * (pixels(long_side) + STEP_OVERHEAD_PIXELS) / (pixels(known_side) + STEP_OVERHEAD_PIXELS)

    if finished and scale_step < STEPS_TO_TRUST_A_PACE:
        cost = through_overhead(*finished[-1])
        pace = cost(side)
    elif finished and pixels(side) > pixels(finished[-1][0]):
        earlier_side, earlier_pace = finished[-1]
        per_pixel = max(0.0, (pace - earlier_pace) / (pixels(side) - pixels(earlier_side)))
        fixed = max(0.0, pace - per_pixel * pixels(side))

        def cost(long_side: int) -> float:
            return fixed + per_pixel * pixels(long_side)
    else:
        cost = through_overhead(side, pace)

    later = sum((n + TARGETS_IN_STEPS) * cost(other) for other, n in schedule[scale_index + 1:])
    return pace * (steps - scale_step) + later
