"""Coarse to fine: the sizes a picture is optimised at and their shares of the steps."""

from __future__ import annotations

import math

MIN_SCALE_SIDE = 128
# ... and the coarsest scale's short side at least this: a 6:1 picture starts at 384x64, not 128x21.
MIN_SCALE_SHORT_SIDE = 64
# Each scale gets this many times the steps of the next finer one, whose steps cost about four times
# as much: so each scale takes about half the time of the next, and the finest most of the run.
SCALE_SHARE_RATIO = 2
# Scales above this long side add a print's detail: each gets as many steps as the last scale up to
# it, not half as many, so a large picture is not the small one enlarged.
DETAIL_SIDE = 1024
# A coarse scale reads the painting at no less than this share of the result's long side: read at the
# scale's own side, a coin of the painting is a blob that relu3_1 takes whole (docs/method.md) ...
COARSE_STYLE_READING = 0.5
# ... and at no more than this many times its own side.
COARSE_STYLE_ENLARGING = 2
# A larger picture is this size's picture with finer detail: its scales up to this side are a run of
# this size's (the readings of the painting, all style layers at this side), and the scales above it
# add the painting's strokes at its own resolution, held to this side's look (docs/method.md).
LOOK_SIDE = 512


def style_reading_side(side: int, size: int, own_side: int, multiscale: bool = True) -> int:
    """The long side at which a scale of `side` px, in a run whose result is `size` px, reads a
    painting whose file is `own_side` px long (before `style_scale`). Up to LOOK_SIDE, as in a run of at
    most LOOK_SIDE: the scale's own side, or COARSE_STYLE_READING of that run's size if larger, up to
    COARSE_STYLE_ENLARGING times its side. Above it, in a multiscale run: its own side, but no more than
    the painting's own resolution (or LOOK_SIDE where the file is smaller), so that its strokes stay crisp."""
    if side > LOOK_SIDE and multiscale:
        return min(side, max(own_side, LOOK_SIDE))
    look_size = min(size, LOOK_SIDE) if multiscale else size
    return max(side, min(round(look_size * COARSE_STYLE_READING), COARSE_STYLE_ENLARGING * side))


def adds_detail(side: int, multiscale: bool) -> bool:
    """Whether a scale of `side` px adds detail to a picture of LOOK_SIDE (a multiscale run's scale above it)."""
    return multiscale and side > LOOK_SIDE


def scale_schedule(size: int, steps: int, multiscale: bool, aspect: float = 1.0) -> list[tuple[int, int]]:
    """[(long side, steps)] coarse to fine, ending at `size`; the steps add up to `steps`.

    The sides grow geometrically from MIN_SCALE_SIDE, by at most 2x a scale (128, 256, 512 for 512;
    128, 222, 384 for 384); for a picture with a long side `aspect` times its short side, from where
    the short side is MIN_SCALE_SHORT_SIDE if that is larger (384, 512 at 6:1). A larger picture takes
    LOOK_SIDE's scales, then grows from LOOK_SIDE the same way (128, 256, 512, 768 for 768). Coarse
    scales cost a fraction as much per step as the next, so each takes twice the steps of the next, up
    to DETAIL_SIDE; the scales above it take as many as the last scale up to it.
    """
    sides = _sides(size, multiscale, aspect)[-steps:]
    shares = [SCALE_SHARE_RATIO ** sum(finer <= DETAIL_SIDE for finer in sides[index + 1:]) for index in range(len(sides))]
    counts = [int(steps * share / sum(shares)) for share in shares]
    counts[-1] = steps - sum(counts[:-1])
    return [(side, n) for side, n in zip(sides, counts) if n > 0]


def _sides(size: int, multiscale: bool, aspect: float) -> list[int]:
    coarsest = max(MIN_SCALE_SIDE, math.ceil(MIN_SCALE_SHORT_SIDE * aspect))
    if not multiscale or size <= coarsest:
        return [size]
    if size > LOOK_SIDE >= coarsest:
        return _sides(LOOK_SIDE, multiscale, aspect) + _geometric(LOOK_SIDE, size)[1:]
    return _geometric(coarsest, size)


def _geometric(smallest: int, largest: int) -> list[int]:
    """From `smallest` to `largest` px in equal ratios of at most 2."""
    count = math.ceil(math.log2(largest / smallest)) + 1
    return [round(largest * (smallest / largest) ** ((count - 1 - i) / (count - 1))) for i in range(count - 1)] + [largest]
