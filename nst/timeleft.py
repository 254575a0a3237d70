"""Seconds left in a run, from the measured pace of the scale under way and one model of how a step's
cost grows with its size: a fixed part plus a part proportional to its convolutions' work."""

from __future__ import annotations

from .layers import conv_work

# The fixed part of a step, in units of convolution work, until a run has timed two sizes; the app's
# warm-up measures it (`measure_fixed_work`). A guess between the machines in docs/speed.md.
GUESSED_FIXED_WORK = 2.5e9
# A later scale's targets (the photo's and the painting's features) and its slower first step.
TARGETS_IN_STEPS = 0.9

_warm_up: tuple[float, float] | None = None  # (fixed work, seconds per unit of work), by `measure_fixed_work`


def step_work(height: int, width: int, deepest: str) -> float:
    """The model's unit of a step's cost: the multiply-adds of VGG19's forward convolutions up to the
    layer `deepest`, for a picture of `height` x `width` (the gradient to the input costs about as much again)."""
    return conv_work(height, width, deepest)


def fixed_work(paces: dict[float, float]) -> float | None:
    """The fixed part of a step, in units of work, through the two largest of `paces` {work: seconds a
    step}; None where they are too close in size to tell it, or the larger was not dearer."""
    if len(paces) < 2:
        return None
    (small, small_seconds), (large, large_seconds) = sorted(paces.items())[-2:]
    if large < 1.5 * small or large_seconds <= small_seconds:
        return None
    per_work = (large_seconds - small_seconds) / (large - small)
    return max(small_seconds / per_work - small, 0.0)


def measure_fixed_work(paces: dict[float, float]) -> None:
    """Keep what steps timed at two sizes say of this machine, for the first frames of later runs."""
    global _warm_up
    fixed = fixed_work(paces)
    if fixed is not None:
        work, seconds = max(paces.items())
        _warm_up = (fixed, seconds / (fixed + work))


class TimeLeft:
    """Follows a run whose scales' steps cost `works` each and number `steps`, and foretells its end.

    Times are given (`now`), not read, so the model can be checked with a made-up clock. A frame's
    seconds (making it, and the consumer's work before it asks for the next) are counted apart from
    the steps: frames come every step, or every `frame_interval` seconds when steps are quicker."""

    def __init__(self, works: list[float], steps: list[int], frame_interval: float):
        self.works, self.steps, self.frame_interval = works, steps, frame_interval
        self.paces: dict[float, float] = {}  # {work: seconds a step} of the scales timed
        self.frame_seconds, self.frames = 0.0, 0

    def start_scale(self, index: int, now: float) -> None:
        self.index, self.started, self.steady_since, self.framing = index, now, now, 0.0

    def step_done(self, scale_step: int, now: float) -> None:
        if scale_step == 1:  # the first step also warms up the scale's buffers: the pace starts after it
            self.steady_since, self.framing = now, 0.0
        elif scale_step > 1:
            self.paces[self.works[self.index]] = (now - self.steady_since - self.framing) / (scale_step - 1)

    def frame_shown(self, seconds: float) -> None:
        self.frame_seconds += seconds
        self.frames += 1
        self.framing += seconds

    def seconds_left(self, scale_step: int, now: float) -> float:
        """Seconds to the run's end, `scale_step` steps into the scale under way."""
        work = self.works[self.index]
        fixed = fixed_work(self.paces)
        if fixed is None:
            fixed = GUESSED_FIXED_WORK if _warm_up is None else _warm_up[0]
        if work in self.paces:
            timed, pace = work, self.paces[work]
        elif self.paces:  # a new scale's first step: a coarser scale's pace, made dearer by the model
            timed, pace = max(self.paces.items())
        elif _warm_up is not None:
            timed, pace = work, _warm_up[1] * (_warm_up[0] + work)
        else:
            timed, pace = work, now - self.started
        frame = self.frame_seconds / self.frames if self.frames else 0.0

        def wall(index: int) -> float:
            """Seconds a step of scale `index` takes, with its share of the frames."""
            seconds = pace * (fixed + self.works[index]) / (fixed + timed)
            if seconds + frame >= self.frame_interval:
                return seconds + frame
            return seconds / (1 - frame / self.frame_interval)

        later = sum((self.steps[index] + TARGETS_IN_STEPS) * wall(index) for index in range(self.index + 1, len(self.works)))
        return (self.steps[self.index] - scale_step) * wall(self.index) + later
