"""Gatys style transfer as a generator of progress frames: the loop.

What is optimised is in `nst.objective`, at which sizes in `nst.schedule`, where and how fast in
`nst.runtime`, and every setting's range in `nst.settings`.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import distributed, images, tiles
from .checkpoint import Checkpoint, CheckpointError, Interrupted, fingerprint, marks_its_update, step_finished, step_torn
from .images import ImageError, ImageSource
from .layers import LAYER_INDEX
from .memory import LARGE_PICTURE, release_freed_memory
from .objective import Objective, tile_plan
from .optimizers import make_optimizer
from .runtime import Runtime
from .schedule import MIN_SCALE_SIDE, scale_schedule, style_reading_side
from .settings import OPTIMIZERS, Settings, SettingsError
from .timeleft import TimeLeft, measure_fixed_work, step_work
from .vgg import load_model


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


def stylize(content: ImageSource, styles: ImageSource | Sequence[ImageSource], settings: Settings = Settings(),
            on_step: Callable[[int, Tensor], None] | None = None, mask: ImageSource | None = None,
            resume: Checkpoint | str | os.PathLike | None = None) -> Iterator[Frame]:
    """Optimise a picture with `content`'s arrangement in the style of `styles`, yielding Frames.

    Images are PIL images of any mode, or files or bytes, taken as `images.open_image` takes them.
    `mask` (any size; a PIL image is taken as it is, a file or bytes as `images.open_mask` reads them)
    says where the style goes: white takes the first style; black keeps the photo, or takes the
    second style when there are two; grey blends. With one style, each picture shown is the photo
    and the optimised picture blended through the (feathered) mask.

    Frames come at most every `settings.frame_interval` seconds, and always at the end (`done`).
    Closing the generator stops the work at the frame it is paused on; no VGG pass runs after that.
    `on_step(step, picture)`, if given, is called after every step with the picture being optimised
    (at the current scale, RGB in [0, 1], before any photo is put back). It is the picture tensor
    itself, not a copy: the run goes on from what on_step leaves in it.

    Long runs: each Frame can `save_checkpoint(path)`, and Ctrl-C (KeyboardInterrupt) in the run is
    raised as `Interrupted`, whose `checkpoint` holds the run as of its last finished step.
    `resume` (a Checkpoint or its file) continues such a run with the same images and the same
    settings for the picture (CheckpointError otherwise) to the picture the run would have made;
    frames go on from its step, and `elapsed` from its elapsed time. The run goes on in the
    Checkpoint's own tensors (a copy would double a large picture's memory): load it again to
    resume it again.
    """
    progress = _Progress()
    try:
        yield from _stylize(content, styles, settings, on_step, mask, resume, progress)
    except KeyboardInterrupt:
        raise Interrupted(None if step_torn() else progress.checkpoint()) from None


def _stylize(content, styles, settings: Settings, on_step, mask, resume, progress: _Progress) -> Iterator[Frame]:
    content, styles = images.open_image(content, "content image"), images.open_styles(styles)
    if not styles:
        raise ImageError("give at least one style image")
    if mask is not None and not isinstance(mask, Image.Image):
        mask = images.open_mask(mask)
    if mask is not None and len(styles) > 2:
        raise ImageError("a mask takes one or two style images: the first where it is white, the second where it is black")
    if mask is not None and len(styles) == 1 and mask.convert("L").getextrema()[1] == 0:
        raise ImageError("the mask is black everywhere, which keeps the photo: paint in white where the style goes")
    settings = settings.validated(style_count=len(styles))
    if mask is not None and len(set(settings.style_blend)) > 1:
        raise SettingsError("a style blend does not apply with a mask: the mask says where each style goes")
    progress.settings, progress.style_count = settings, len(styles)
    progress.fingerprint = functools.cache(lambda: fingerprint(content, styles, mask))
    if resume is not None:
        resume = resume if isinstance(resume, Checkpoint) else Checkpoint.load(resume)
        resume.check_resumes(settings, progress.fingerprint())
    runtime = Runtime.for_settings(settings)
    runtime.prepare()
    started = time.perf_counter() - (resume.elapsed if resume else 0.0)
    progress.started = started
    model = load_model(settings.weights, settings.pooling, str(runtime.device))
    content_full, style_full, colour_source = _load(content, styles, settings, runtime.device)
    mask_full = None if mask is None else images.load_mask(mask, tuple(content_full.shape[-2:]), settings.mask_feather, runtime.device)
    aspect = max(content_full.shape[-2:]) / min(content_full.shape[-2:])
    schedule = scale_schedule(settings.size, settings.steps, settings.multiscale, aspect)
    health = _Health(runtime.device)
    sizes = [images.working_size(content_full.shape[-1], content_full.shape[-2], side, "content image") for side, _ in schedule]
    scales = [scale_settings(settings, index == len(schedule) - 1) for index in range(len(schedule))]
    first_steps = [1] * len(schedule)  # each scale's first step to take: later than 1 in the scale a checkpoint resumes
    if resume is not None:
        first_steps[resume.scale] = _resumed_scale_step(resume, schedule, sizes)
        first_steps[: resume.scale] = [n + 1 for _, n in schedule[: resume.scale]]
    clock = TimeLeft([step_work(*size, _deepest(scale)) * tiles.step_cost(tile_plan(scale, size, runtime.device))
                      for size, scale in zip(sizes, scales)],
                     [n - first + 1 for (_, n), first in zip(schedule, first_steps)], settings.frame_interval)
    image = last_good = None
    step = last_good_step = 0
    values: dict[str, Tensor] = {}
    last_frame = -math.inf

    output_size = (content_full.shape[-1], content_full.shape[-2])  # (width, height), as PIL has it
    # With one style, every picture shown is the photo where the mask is black (blended through its
    # feathered edge), sharp also while a coarse scale runs: the optimised picture drifts there.
    photo_kept = mask_full is not None and len(styles) == 1

    def frame(picture: Tensor, done: bool, message: str = "", seconds_left: float = 0.0) -> Frame:
        if photo_kept:
            shown = images.to_pil(images.composite(images.resize(picture, tuple(content_full.shape[-2:])), content_full, mask_full))
        else:
            shown = images.to_pil(picture)
        if shown.size != output_size:  # a coarse scale, shown at the size of the result
            shown = shown.resize(output_size, Image.Resampling.BICUBIC)
        if colour_source is not None:
            shown = images.with_chroma(shown, colour_source)
        return Frame(step, settings.steps, {name: float(value.detach()) for name, value in values.items()},
                     time.perf_counter() - started, shown, done, runtime.device.type, runtime.precision,
                     message, tuple(picture.shape[-2:]), seconds_left, None if done else progress.taker(step))

    for scale_index, (scaled_size, (_, scale_steps)) in enumerate(zip(sizes, schedule)):
        if resume is not None and scale_index <= resume.scale:
            step = resume.step
            if first_steps[scale_index] > scale_steps:  # a scale the checkpoint had finished
                if scale_index == resume.scale:
                    image = resume.picture.to(runtime.device)
                    last_good, last_good_step = image, step
                    progress.at = (scale_index, step, image, lambda: resume.optimizer)
                continue
        objective = optimizer = closure = None  # the last scale's: freed before this one's targets are made
        if max(scaled_size) > LARGE_PICTURE:  # and handed back, where the process keeps freed memory
            release_freed_memory()
        content_scaled = images.resize(content_full, scaled_size)
        mask_scaled = None if mask_full is None else F.interpolate(mask_full, size=scaled_size, mode="area")
        objective = Objective(model, content_scaled, style_full, scales[scale_index], runtime, mask_scaled,
                              style_reading_side=style_reading_side(max(scaled_size), settings.size))
        # A tiled scale hands freed memory back after its targets and after each step: a heap kept
        # across steps grew by a fragment a step (400 MB at 4096 px), and a step then faults in only
        # its first tile's pages, which the other tiles reuse.
        tiled = objective.tiles is not None
        if tiled:
            release_freed_memory()
        if image is not None and (message := health.failure(image, step, last_good_step)):
            yield frame(last_good, True, message)
            return
        if resume is not None and scale_index == resume.scale:
            image = resume.picture.to(runtime.device)
        elif image is None:
            image = _initial_image(settings.init, content_scaled, style_full[0], settings.seed)
        else:
            image = _finer(image.detach(), content_scaled, settings.init)
        # Contiguous, as L-BFGS flattens it; the channels-last weights make the activations channels-last.
        image = image.contiguous().requires_grad_(True)
        optimizer = make_optimizer(settings.optimizer, image)
        if resume is not None and scale_index == resume.scale:
            try:
                optimizer.load_state_dict(resume.optimizer)
            except (KeyError, TypeError, ValueError) as error:
                raise CheckpointError(f"the checkpoint's optimiser state does not fit this run: {error}") from error
        last_good, last_good_step = image.detach().clone(), step
        values = {}
        # A tiled evaluation's passes are not captured as a CUDA graph.
        closure = runtime.accelerated(_closure(optimizer, objective, image, values), scale_steps, capturable=objective.tiles is None)
        closure = marks_its_update(closure)
        progress.at = (scale_index, step, image, optimizer.state_dict)
        skipped = first_steps[scale_index] - 1  # steps of this scale taken before the checkpoint

        clock.start_scale(scale_index, time.perf_counter())
        for scale_step in range(first_steps[scale_index], scale_steps + 1):
            optimizer.step(closure)
            if tiled:
                release_freed_memory()
            clock.step_done(scale_step - skipped, time.perf_counter())
            step += 1
            progress.at = (scale_index, step, image, optimizer.state_dict)
            step_finished()
            health.record(step, values["total"])
            if on_step is not None:
                on_step(step, image.detach())
            final, now = step == settings.steps, time.perf_counter()
            # With several processes, the first one's clock says when: a frame's check may end the run, in all alike.
            if not distributed.agreed(final or now - last_frame >= settings.frame_interval):
                continue
            last_frame = now
            if message := health.failure(image, step, last_good_step):
                yield frame(last_good, True, message)
                return
            last_good.copy_(image.detach())  # into its block: no picture-sized block made anew each frame
            last_good_step = step
            yield frame(last_good, final, seconds_left=clock.seconds_left(scale_step - skipped, now))
            clock.frame_shown(time.perf_counter() - now)


class _Progress:
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


def _resumed_scale_step(resume: Checkpoint, schedule: list[tuple[int, int]], sizes: list[tuple[int, int]]) -> int:
    """The first step to take in the scale `resume` was taken in, counted from 1 in that scale; CheckpointError
    where the checkpoint does not fit the schedule."""
    if not 0 <= resume.scale < len(schedule):
        raise CheckpointError(f"the checkpoint's scale {resume.scale} is not in this run's {len(schedule)}")
    before = sum(n for _, n in schedule[: resume.scale])
    if not before <= resume.step <= before + schedule[resume.scale][1]:
        raise CheckpointError(f"the checkpoint's step {resume.step} is not in its scale")
    if tuple(resume.picture.shape[-2:]) != tuple(sizes[resume.scale]):
        raise CheckpointError(f"the checkpoint's picture is {tuple(resume.picture.shape[-2:])} px, not its scale's {sizes[resume.scale]}")
    return resume.step - before + 1


def scale_settings(settings: Settings, last_scale: bool) -> Settings:
    """What a scale optimises with: before the last scale, only the style layers above block 4.

    At a coarse size a deep layer's field takes in the painting's objects whole and draws them, large,
    into the picture; at full size it sees parts of objects (docs/method.md). A run with no shallow
    style layer keeps all of its layers at every scale."""
    shallow = [(layer, weight) for layer, weight in zip(settings.style_layers, settings.style_layer_weights, strict=True)
               if LAYER_INDEX[layer] < LAYER_INDEX["conv4_1"]]
    if last_scale or not shallow:
        return settings
    layers, weights = zip(*shallow, strict=True)
    return replace(settings, style_layers=layers, style_layer_weights=weights)


def _deepest(settings: Settings) -> str:
    """The deepest layer a scale's objective reads, up to which the network runs."""
    return max((settings.content_layer, *settings.style_layers), key=LAYER_INDEX.__getitem__)


class _Health:
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


def _load(content: Image.Image, styles: list[Image.Image], settings: Settings, device: torch.device):
    """The content and the styles as tensors at the output size, prepared for the colour mode, and
    the photo whose colours a luminance-only result takes (None in the other modes)."""
    colour_source = None
    if settings.preserve_colors == "luminance":
        colour_source = content.resize(images.working_size(content.width, content.height, settings.size, "content image")[::-1],
                                       Image.Resampling.BICUBIC)
        content, styles = images.greyscale(content), [images.greyscale(style) for style in styles]
    content_full = images.load_tensor(content, settings.size, device, "content image")
    style_full = [images.load_style_tensor(style, round(settings.size * settings.style_scale), device, what)
                  for style, what in zip(styles, images.style_names(len(styles)), strict=True)]
    if settings.preserve_colors == "histogram":
        style_full = [images.match_histogram(style, content_full) for style in style_full]
    elif settings.preserve_colors == "luminance":
        style_full = [images.match_luminance(style, content_full) for style in style_full]
    return content_full, style_full, colour_source


def _initial_image(init: str, content: Tensor, style: Tensor, seed: int) -> Tensor:
    if init == "content":
        return content.detach().clone()
    if init == "style":
        return images.resize(style, tuple(content.shape[-2:])).detach().clone()
    return torch.rand(content.shape, generator=torch.Generator().manual_seed(seed)).to(content.device)


def _finer(image: Tensor, content: Tensor, init: str) -> Tensor:
    """The picture of a coarser scale at `content`'s size. Started from the photo, it also takes the
    photo's detail that the coarser scale could not hold (the photo less its copy through the coarse
    size): upscaled alone, it starts blurred and the dear finest steps go to sharpening it again
    (docs/method.md, coarse to fine)."""
    upscaled = images.resize(image, tuple(content.shape[-2:]))
    if init != "content":
        return upscaled
    blurred = images.resize(images.resize(content, tuple(image.shape[-2:])), tuple(content.shape[-2:]))
    return (upscaled + content - blurred).clamp(0, 1)


def _closure(optimizer, objective: Objective, image: Tensor, values: dict[str, Tensor]) -> Callable[[], Tensor]:
    """One evaluation: the loss terms into `values`, gradients into `image.grad` (of the whole picture
    at once, or tile by tile); returns the total."""

    def closure() -> Tensor:
        optimizer.zero_grad()
        values.clear()  # drop the last evaluation's autograd graph before building the next
        values.update(objective.loss_and_gradient(image))
        return values["total"]

    return closure


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
    coarse = scale_settings(settings, last_scale=False)
    ends: dict[tuple[int, int], list[float]] = {}  # the moments each size's steps ended

    def timed(_, picture: Tensor) -> None:
        ends.setdefault(tuple(picture.shape[-2:]), []).append(time.perf_counter())

    for _ in stylize(picture, picture, replace(settings, size=side, steps=18, frame_interval=3600), on_step=timed):
        pass
    # each coarse size's steps after its second: the first warms up the scale's buffers, a frame follows the run's first
    measure_fixed_work({step_work(*size, _deepest(coarse)): (times[-1] - times[1]) / (len(times) - 2)
                        for size, times in ends.items() if max(size) < side and len(times) > 2})
