"""What watches the loop, one concern each: whether it is still finite (`Health`), where it stands for
a checkpoint (`Position`), and when a frame is due and what it shows (`Frames`)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import Tensor

from . import distributed, images
from .checkpoint import Checkpoint, CheckpointError
from .settings import Settings


@dataclass
class Frame:
    """One progress report. `image` is the current picture, at the size of the result also while a
    coarser scale is optimised (`size` is the scale's)."""

    step: int
    steps: int
    losses: dict[str, float]
    elapsed: float
    image: Image.Image
    done: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    message: str = ""
    size: tuple[int, int] = field(default=(0, 0))  # (height, width) of the picture being optimised
    seconds_left: float = 0.0  # to the end of the run, foretold by `nst.timeleft`; 0 when done
    _checkpoint: Callable[[], Checkpoint] | None = field(default=None, repr=False, compare=False)

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write the run as of this frame to `path` (`Checkpoint.save`), to continue it later with
        `stylize(..., resume=path)`; while the run is paused at this frame (CheckpointError after)."""
        if self._checkpoint is None:
            raise CheckpointError("this frame ends its run: there is nothing to resume")
        self._checkpoint().save(path)


class Health:
    """Whether every loss so far and the picture are finite. Each step's check stays on the device;
    it is read only where a picture is about to be shown or carried to a finer scale, so that no
    step waits for a sync."""

    def __init__(self, device: torch.device):
        self.first_bad_step = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet

    def record(self, step: int, total: Tensor) -> None:
        self.first_bad_step.copy_(torch.where((self.first_bad_step == 0) & ~torch.isfinite(total), step, self.first_bad_step))

    def failure(self, image: Tensor, step: int, last_good_step: int) -> str:
        """Empty while all is finite, else what went wrong."""
        bad_step = int(self.first_bad_step)
        if not bad_step and bool(torch.isfinite(image).all()):
            return ""
        what = f"the loss became infinite or NaN at step {bad_step}" if bad_step else f"the picture became NaN at step {step}"
        return f"{what}; showing the last good picture, from step {last_good_step} (try lower weights or fp32)"


class Position:
    """Where a run stands, for its checkpoints: `at` is (scale index, step, picture, the optimiser's
    state_dict), set where the picture and the optimiser's state are a finished step's (or a scale's start)."""

    settings: Settings
    style_count: int
    fingerprint: Callable[[], str]
    started: float
    at: tuple[int, int, Tensor, Callable[[], dict]] | None = None

    def checkpoint(self) -> Checkpoint | None:
        if self.at is None:
            return None
        scale_index, step, image, optimizer_state = self.at
        return Checkpoint(self.settings, self.fingerprint(), scale_index, step, time.perf_counter() - self.started,
                          image.detach(), optimizer_state(), self.style_count)

    def taker(self, step: int) -> Callable[[], Checkpoint]:
        """The checkpoint of the run at `step`, for as long as the run stays there."""

        def take() -> Checkpoint:
            if self.at is None or self.at[1] != step:
                raise CheckpointError(f"the run has gone on from step {step}: take a frame's checkpoint while the run is paused at it")
            return self.checkpoint()

        return take


class Frames:
    """When a frame is due (every `frame_interval` seconds, and at the end), and what it shows: the
    picture at the result's size, with the photo where a one-style mask is black (sharp also while a
    coarse scale runs: the optimised picture drifts there), and the photo's colours in luminance mode."""

    def __init__(self, settings: Settings, inputs, device: str, precision: str, position: Position):
        self.settings, self.inputs, self.device, self.precision, self.position = settings, inputs, device, precision, position
        self.photo_kept = inputs.mask is not None and len(inputs.styles) == 1
        self.output_size = (inputs.content.shape[-1], inputs.content.shape[-2])  # (width, height), as PIL has it
        self.last = -math.inf

    def due(self, final: bool, now: float) -> bool:
        # With several processes, the first one's clock says when: a frame's check may end the run, in all alike.
        if not distributed.agreed(final or now - self.last >= self.settings.frame_interval):
            return False
        self.last = now
        return True

    def make(self, picture: Tensor, step: int, values: dict[str, Tensor], done: bool, message: str = "",
             seconds_left: float = 0.0) -> Frame:
        content, mask = self.inputs.content, self.inputs.mask
        if self.photo_kept:
            shown = images.to_pil(images.composite(images.resize(picture, tuple(content.shape[-2:])), content, mask))
        else:
            shown = images.to_pil(picture)
        if shown.size != self.output_size:  # a coarse scale, shown at the size of the result
            shown = shown.resize(self.output_size, Image.Resampling.BICUBIC)
        if self.inputs.colour_source is not None:
            shown = images.with_chroma(shown, self.inputs.colour_source)
        return Frame(step, self.settings.steps, {name: float(value.detach()) for name, value in values.items()},
                     time.perf_counter() - self.position.started, shown, done, self.device, self.precision,
                     message, tuple(picture.shape[-2:]), seconds_left, None if done else self.position.taker(step))
