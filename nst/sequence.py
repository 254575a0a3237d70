"""A clip painted frame by frame, steadily (Ruder et al. 2016): each frame is a `stylize` run; the
first (and the first after a scene cut) a full still run, each later one starting from the previous
painted frame warped along the optical flow between the input frames (`nst.flow`), at the last
scale only, with fewer steps and the temporal term (`nst.terms.Temporal`) holding it there wherever
the flow can be trusted.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from . import flow, images
from .engine import stylize
from .images import ImageSource
from .observers import Frame
from .schedule import scale_schedule
from .settings import Settings, VideoSettings
from .terms import Temporal
from .video import Clip


@dataclass
class VideoFrame:
    """Progress on one frame of a clip: `progress` is the engine's Frame of its run; where `done`,
    `progress.image` is the painted frame. `fresh`: a full still run (the first frame, or a scene
    cut); `reliable`: the share of pixels the flow from the frame before trusts (0 on the first)."""

    index: int
    frames: int
    progress: Frame
    fresh: bool
    reliable: float
    done: bool
    elapsed: float
    seconds_left: float

    resume: VideoResume | None = None  # on a done frame: what a run needs to go on from the next frame

    @property
    def image(self) -> Image.Image:
        return self.progress.image


@dataclass
class VideoResume:
    """Where a clip's painting goes on: at frame `next_frame` (counted from 0), after the input frame
    `before` (at the working size) painted as `painted` (H, W, 3 float32, the optimised picture
    before 8-bit rounding); `elapsed` and `later_seconds` carry the clock and the time-left estimate."""

    next_frame: int
    before: Image.Image
    painted: np.ndarray
    elapsed: float = 0.0
    later_seconds: tuple[float, ...] = ()


def stylize_video(clip: str | Clip, styles: ImageSource | Sequence[ImageSource], settings: Settings = Settings(),
                  video: VideoSettings = VideoSettings(), mask: ImageSource | None = None,
                  resume: VideoResume | None = None) -> Iterator[VideoFrame]:
    """Paint `clip` (a file, or a `Clip`) in the style of `styles`, yielding VideoFrames: progress
    within each frame's run and, `done`, each painted frame in order. Settings, styles and mask are
    taken as `stylize` takes them, for every frame; VideoError for a clip that cannot be read.
    `resume` (a done frame's) goes on from its next frame, as the run it came from would have."""
    video = video.validated()
    clip = clip if isinstance(clip, Clip) else Clip.open(clip, video.fps)
    styles = images.open_styles(styles)
    settings = settings.validated(style_count=len(styles))  # refused before a frame is decoded
    mask = images.open_mask(mask) if mask is not None and not isinstance(mask, Image.Image) else mask
    started, later_seconds, later = time.perf_counter() - (resume.elapsed if resume else 0.0), [], None
    before = painted = None  # the previous input frame at the working size, and its painted picture (H, W, 3)
    if resume is not None:
        before, painted, later_seconds = resume.before, resume.painted, list(resume.later_seconds)
    for index, frame in enumerate(clip.frames()):
        if resume is not None and index < resume.next_frame:
            continue
        height, width = images.working_size(frame.width, frame.height, settings.size, "clip")
        if later is None:  # a later frame: the last scale only
            steps = video.later_steps or a_third_of_a_still(settings, max(width, height) / min(width, height))
            later = replace(settings, multiscale=False, steps=steps)
        now = frame.resize((width, height), Image.Resampling.BICUBIC)
        moved = None if before is None else flow.motion(before, now)
        fresh = moved is None or moved.is_cut
        start = terms = None
        if not fresh:
            start, terms = _following(painted, moved, video.temporal_weight)
        last: dict[str, torch.Tensor] = {}
        frame_started = time.perf_counter()
        for progress in stylize(frame, styles, settings if fresh else later, on_step=functools.partial(_keep, last),
                                mask=mask, start=start, extra_terms=terms):
            seconds_left = progress.seconds_left + _rest(clip.frame_count - index - 1, later_seconds, frame_started)
            after = None
            if progress.done:
                painted = _painted(last.get("picture"), progress, (height, width))
                later_seconds += [] if fresh else [time.perf_counter() - frame_started]
                after = VideoResume(index + 1, now, painted, time.perf_counter() - started, tuple(later_seconds))
            yield VideoFrame(index, clip.frame_count, progress, fresh, 0.0 if moved is None else moved.reliable_share,
                             progress.done, time.perf_counter() - started, seconds_left, after)
        before = now


def a_third_of_a_still(settings: Settings, aspect: float) -> int:
    """Steps at the full size that cost a third of a still run's (its coarse steps counted by their pixels)."""
    schedule = scale_schedule(settings.size, settings.steps, settings.multiscale, aspect)
    work = sum(steps * (side / settings.size) ** 2 for side, steps in schedule)
    return max(1, int(work / 3))


def _keep(last: dict, step: int, picture: torch.Tensor) -> None:
    last["picture"] = picture  # the run's own tensor: it holds the finished picture when the run ends


def _following(painted: np.ndarray, moved: flow.Motion, weight: float):
    """The start picture and the temporal term of a frame that follows a painted one."""
    warped = torch.from_numpy(flow.warp(painted, moved.backward)).permute(2, 0, 1).unsqueeze(0).contiguous()
    reliability = torch.from_numpy(moved.reliability)[None, None]

    def terms(size: tuple[int, int], device: torch.device) -> list:
        return [Temporal(images.resize(warped, size).to(device), torch.nn.functional.interpolate(reliability, size=size).to(device),
                         weight)]

    return warped, terms


def _painted(picture: torch.Tensor | None, progress: Frame, size: tuple[int, int]) -> np.ndarray:
    """The frame's optimised picture (H, W, 3) at the working size: what the run left, or where it
    stopped on a loss gone bad, the last good picture it showed."""
    if picture is None or progress.message:
        picture = images.to_tensor(progress.image)
    picture = images.resize(picture.detach().float().cpu(), size)
    return picture[0].permute(1, 2, 0).contiguous().numpy()


def _rest(frames_left: int, later_seconds: list[float], frame_started: float) -> float:
    """The seconds the frames after this one will take, foretold by the later frames so far (else by this one's)."""
    per_frame = float(np.mean(later_seconds)) if later_seconds else time.perf_counter() - frame_started
    return max(frames_left, 0) * per_frame
