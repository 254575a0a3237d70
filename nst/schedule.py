"""Coarse to fine: the sizes a picture is optimised at, their shares of the steps, and time left."""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_SCALE_SIDE = 128
# ... and the coarsest scale's short side at least this: a 6:1 picture starts at 384x64, not 128x21.
MIN_SCALE_SHORT_SIDE = 64
# Each scale gets this many times the steps of the next finer one, whose steps cost about four times
# as much: so each scale takes about half the time of the next, and the finest most of the run.
SCALE_SHARE_RATIO = 2
# A step computes in about a + b * pixels * (1 + pixels / STEP_CACHE_PIXELS) seconds: a fixed part, taken
# to be the cost of some pixels (the overhead), and a part per pixel that grows once the activations
# outgrow the caches. The overhead is the machine's: steps of the coarse scales' layers, 3:2 pictures,
# as multiples of a 128 px step, were 2.3 and 9.3 at 256 and 512 px on two AVX2 cores (an overhead of
# about 13,000 to 16,000 pixels), and 3.3 and 14.0 on two cores of an AVX-512 CPU with bf16 (about
# 4,500), where the fixed guess foretold the time left at 0.75-0.79 of the truth. So it is fitted to
# the steps timed in the process (`fitted_overhead`), and STEP_OVERHEAD_PIXELS stands in until two
# sizes twice apart or more have been timed. The overhead is kept within 0 and MAX_OVERHEAD_PIXELS:
# a fit to noisy paces can put it anywhere.
STEP_OVERHEAD_PIXELS = 15_000
MAX_OVERHEAD_PIXELS = 60_000
STEP_CACHE_PIXELS = 800_000
# Computing a scale's targets (the photo's and the painting's features, no gradient) and its first,
# slower step cost about this many of its steps more.
TARGETS_IN_STEPS = 0.9
# A scale's pace is judged from its own steps and from what the steps timed before it foresee
# (`StepCurve`), which counts as this many of the scale's steps: the curve misses a size it has not
# timed by up to a tenth, and one step of a new scale is noisier, so each alone missed by up to a fifth.
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


def step_cost(pixels: float, overhead_pixels: float = STEP_OVERHEAD_PIXELS) -> float:
    """What a step of a picture of `pixels` costs, in pixels of the per-pixel part at small sizes."""
    return overhead_pixels + pixels * (1 + pixels / STEP_CACHE_PIXELS)


def scale_pixels(long_side: int, aspect: float = 1.0) -> float:
    return long_side * long_side / aspect


@dataclass(frozen=True)
class StepCurve:
    """Seconds a step of the coarse scales' layers computes at each size on this machine:
    `unit * step_cost(pixels, overhead_pixels)` (`unit` None while no step has been timed)."""

    overhead_pixels: float = STEP_OVERHEAD_PIXELS
    unit: float | None = None

    @classmethod
    def through(cls, paces: dict[float, float], overhead_pixels: float) -> StepCurve:
        """The curve with this overhead nearest to `paces` {pixels: seconds a step}, each by its
        relative error (so that a small size's steps count as much as a large one's)."""
        if not paces:
            return cls(overhead_pixels)
        ratios = [step_cost(pixels, overhead_pixels) / seconds for pixels, seconds in paces.items()]
        return cls(overhead_pixels, sum(ratios) / sum(ratio * ratio for ratio in ratios))

    def seconds(self, pixels: float) -> float | None:
        return None if self.unit is None else self.unit * step_cost(pixels, self.overhead_pixels)


def fitted_overhead(paces: dict[float, float]) -> float | None:
    """The overhead that fits `paces` {pixels: seconds a step} best, each by its relative error, where
    they were timed at sizes twice the pixels apart or more and the larger took longer; else None."""
    if len(paces) < 2 or max(paces) < 2 * min(paces):
        return None
    # seconds = a + b * pixels * (1 + ...) by least squares weighted 1 / seconds^2; the overhead is a / b
    weights = {pixels: 1 / (seconds * seconds) for pixels, seconds in paces.items()}
    total = sum(weights.values())
    mean_x = sum(weights[pixels] * step_cost(pixels, 0) for pixels in paces) / total
    mean_y = sum(weights[pixels] * seconds for pixels, seconds in paces.items()) / total
    spread = sum(weights[pixels] * (step_cost(pixels, 0) - mean_x) ** 2 for pixels in paces)
    slope = sum(weights[pixels] * (step_cost(pixels, 0) - mean_x) * (seconds - mean_y) for pixels, seconds in paces.items()) / spread
    if slope <= 0:
        return None
    return min(max((mean_y - slope * mean_x) / slope, 0.0), MAX_OVERHEAD_PIXELS)


def foretelling_overhead(earlier_runs: StepCurve, this_run: dict[float, float]) -> float:
    """The overhead that foretells a run's sizes to come from the steps it has timed, `this_run`
    {pixels: seconds a step}, the scale under way last: fitted to them where they span sizes. Else
    what the latest takes beyond the earlier runs' steps at its size is taken to be a fixed cost per
    step: the app's steps took 8 to 10 ms longer than the same steps timed before it served, at
    128 px as at 222 px (1.4 and 1.2 times as long), on an AVX-512 machine whose steps took 21 and
    56 ms there."""
    if (fitted := fitted_overhead(this_run)) is not None:
        return fitted
    if earlier_runs.unit is None or not this_run:
        return earlier_runs.overhead_pixels
    pixels, seconds = list(this_run.items())[-1]
    excess = (seconds - earlier_runs.seconds(pixels)) / earlier_runs.unit
    return min(max(earlier_runs.overhead_pixels + excess, 0.0), MAX_OVERHEAD_PIXELS)


def curve_so_far(earlier_runs: StepCurve, this_run: dict[float, float], deep_pixels: float | None = None) -> StepCurve:
    """What a run's steps (`this_run`) say of its sizes to come and, once kept, of the runs after it:
    the curve through them, with the overhead that foretells their sizes (`foretelling_overhead`);
    before it has timed any, the earlier runs'. `deep_pixels`: the size whose steps also computed the
    deep style layers, their seconds divided by DEEP_LAYERS_STEP_COST, a guess; left out of the
    overhead's fit where the others span sizes.

    One size's steps that took longer than foreseen count as overhead in what is kept too, though load
    can slow them all through: a 512 px run slowed by a tenth would make the next run's first 128 px
    steps look 1.9 times their pace, until its own steps outweigh that, a few frames on. Counted as a
    slower pace all through instead, the app's 128 px runs, whose steps take a fixed 8-10 ms more
    than the warm-up's, made a 384 px run's frames foretell 1.25-1.48 times the truth for the whole
    of its first scale."""
    if not this_run:
        return earlier_runs
    overhead = fitted_overhead({pixels: seconds for pixels, seconds in this_run.items() if pixels != deep_pixels})
    return StepCurve.through(this_run, foretelling_overhead(earlier_runs, this_run) if overhead is None else overhead)


def blended_pace(own: float, scale_step: int, foreseen: float | None) -> float:
    """The pace of a scale's steps: its own (`own`, `scale_step` steps in), and the pace the steps
    timed before it foresee, which counts as EARLIER_PACE_IN_STEPS steps."""
    if foreseen is None:
        return own
    own_steps = max(scale_step - 1, 1)  # the first step is left out of the pace once there are more
    return (EARLIER_PACE_IN_STEPS * foreseen + own_steps * own) / (EARLIER_PACE_IN_STEPS + own_steps)


def estimate_seconds_left(schedule: list[tuple[int, int]], scale_index: int, scale_step: int, pace: float,
                          aspect: float = 1.0, overhead_pixels: float = STEP_OVERHEAD_PIXELS, frame_seconds: float = 0.0,
                          frame_interval: float = 0.0, last_scale_cost: float = 1.0) -> float:
    """Estimated seconds to the end of `schedule`, `scale_step` steps into a scale whose steps compute
    in `pace` seconds, for a picture whose long side is `aspect` times its short side, on a machine
    whose steps cost `step_cost(pixels, overhead_pixels)`. A step of the last scale costs
    `last_scale_cost` times what its size alone says.

    Frames are counted apart from the steps: each costs `frame_seconds` (making it and the consumer's
    work before the next step), and they come every step, or every `frame_interval` seconds when
    steps are quicker. At small scales the frames' share of the time is larger than at large ones,
    so a pace that held them would make finer scales look too dear.
    """
    steps = schedule[scale_index][1]
    last = len(schedule) - 1

    def cost(index: int) -> float:
        return step_cost(scale_pixels(schedule[index][0], aspect), overhead_pixels) * (last_scale_cost if index == last else 1.0)

    def compute(index: int) -> float:
        return pace * cost(index) / cost(scale_index)

    def wall(seconds: float) -> float:
        """A step's seconds with its share of the frames."""
        if seconds + frame_seconds >= frame_interval:
            return seconds + frame_seconds
        return seconds / (1 - frame_seconds / frame_interval)

    later = sum(n * wall(compute(index)) + TARGETS_IN_STEPS * compute(index)
                for index, (_, n) in enumerate(schedule) if index > scale_index)
    return (steps - scale_step) * wall(compute(scale_index)) + later
