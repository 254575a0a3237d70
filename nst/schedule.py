"""Coarse to fine: the sizes a picture is optimised at, their shares of the steps, and time left."""

from __future__ import annotations

import math

MIN_SCALE_SIDE = 128
# ... and the coarsest scale's short side at least this: a 6:1 picture starts at 384x64, not 128x21.
MIN_SCALE_SHORT_SIDE = 64
# Each scale gets this many times the steps of the next finer one, whose steps cost about four times
# as much: so each scale takes about half the time of the next, and the finest most of the run.
SCALE_SHARE_RATIO = 2
# A step computes in about a + b * pixels * (1 + pixels / STEP_CACHE_PIXELS) seconds: a fixed part, taken
# to be the cost of STEP_OVERHEAD_PIXELS, and a part per pixel that grows once the activations outgrow
# the caches. Steps timed on two AVX2 cores, 3:2 pictures, as multiples of a 128 px step: through the
# Python API 1.9, 2.3, 4.5 and 9.3 at 222, 256, 384 and 512 px; in the app, whose server threads add
# a share to every step, less (512 px steps about 3.2 times 256 px ones, against 4.0). This gives 1.9,
# 2.35, 4.8 and 8.7, between the two.
STEP_OVERHEAD_PIXELS = 15_000
STEP_CACHE_PIXELS = 800_000
# Computing a scale's targets (the photo's and the painting's features, no gradient) and its first,
# slower step cost about this many of its steps more.
TARGETS_IN_STEPS = 0.9
# A new scale's pace is judged from its own steps and from the scale before it, whose pace counts as
# this many of the new scale's steps: a step's cost grows with its pixels differently from machine to
# machine and from CLI to app (1.7 to 2.6 times from one scale to the next here), and one step of
# the new scale is as noisy, so each alone missed by up to a fifth.
EARLIER_PACE_IN_STEPS = 2
# A step of the last scale also computes the deep style layers that the coarser scales leave out
# (nst.engine.scale_settings): in the app at 384 px, on two AVX2 cores, the time left that the coarser
# scales' pace foretold ran at 0.75-0.90 of the truth without this.
DEEP_LAYERS_STEP_COST = 1.3

# A coarse scale reads the painting at no less than this share of the result's long side. Read at the
# scale's own side (128 px of a 512 px result), a coin of the painting is a blob that relu3_1 takes in
# whole, and the picture took pale coin-shaped blobs in its flat regions, which the finer scales kept
# (the fig's background on the quality panel); read at 256 px, the coarse scales take the coins'
# surface instead. The photo came closer too (fig 0.90 to 0.85, cameraman 0.99 to 0.92 of the
# anchor's content distance), the painting a little further (fig 1.07 to 1.10, stream 1.07 to 1.09).
COARSE_STYLE_READING = 0.5


def style_reading_side(side: int, size: int) -> int:
    """The long side at which a scale of `side` px, in a run whose result is `size` px, reads the
    painting (before `style_scale`): its own side, or COARSE_STYLE_READING of `size` if larger."""
    return max(side, round(size * COARSE_STYLE_READING))


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


def step_cost(long_side: int, aspect: float = 1.0) -> float:
    """What a step costs at a long side, in pixels of the per-pixel part at small sizes."""
    pixels = long_side * long_side / aspect
    return STEP_OVERHEAD_PIXELS + pixels * (1 + pixels / STEP_CACHE_PIXELS)


def estimate_seconds_left(schedule: list[tuple[int, int]], scale_index: int, scale_step: int, pace: float,
                          aspect: float = 1.0, earlier: tuple[int, float] | None = None, frame_seconds: float = 0.0,
                          frame_interval: float = 0.0, last_scale_cost: float = 1.0) -> float:
    """Estimated seconds to the end of `schedule`, `scale_step` steps into a scale whose steps compute
    in `pace` seconds, for a picture whose long side is `aspect` times its short side. `earlier` is
    (long side, seconds a step computed) of the scale before, if any (see EARLIER_PACE_IN_STEPS).
    A step of the last scale costs `last_scale_cost` times what its size alone says.

    Frames are counted apart from the steps: each costs `frame_seconds` (making it and the consumer's
    work before the next step), and they come every step, or every `frame_interval` seconds when
    steps are quicker. At small scales the frames' share of the time is larger than at large ones,
    so a pace that held them would make finer scales look too dear.
    """
    side, steps = schedule[scale_index]
    last = len(schedule) - 1

    def cost(index: int) -> float:
        return step_cost(schedule[index][0], aspect) * (last_scale_cost if index == last else 1.0)

    current = cost(scale_index)
    if earlier is not None:
        # the scale before, or for the first scale a run's first scale before it: of the same kind
        earlier_cost = step_cost(earlier[0], aspect) * (last_scale_cost if scale_index == last == 0 else 1.0)
        own_steps = max(scale_step - 1, 1)  # the first step is left out of the pace once there are more
        pace = (EARLIER_PACE_IN_STEPS * earlier[1] * current / earlier_cost + own_steps * pace) / (EARLIER_PACE_IN_STEPS + own_steps)

    def compute(index: int) -> float:
        return pace * cost(index) / current

    def wall(seconds: float) -> float:
        """A step's seconds with its share of the frames."""
        if seconds + frame_seconds >= frame_interval:
            return seconds + frame_seconds
        return seconds / (1 - frame_seconds / frame_interval)

    later = sum(n * wall(compute(index)) + TARGETS_IN_STEPS * compute(index)
                for index, (_, n) in enumerate(schedule) if index > scale_index)
    return (steps - scale_step) * wall(compute(scale_index)) + later
