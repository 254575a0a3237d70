"""Gatys style transfer as a generator of progress frames: the loop.

What is optimised is in `nst.objective`, at which sizes in `nst.schedule`, where and how fast in
`nst.runtime`, and every setting's range in `nst.settings`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import images
from .images import ImageError, ImageSource
from .objective import Objective
from .optimizers import make_optimizer
from .runtime import Runtime
from .schedule import (DEEP_LAYERS_STEP_COST, MIN_SCALE_SIDE, StepCurve, blended_pace, curve_so_far, estimate_seconds_left,
                       foretelling_overhead, scale_schedule, style_reading_side)
from .settings import OPTIMIZERS, Settings, SettingsError
from .vgg import LAYER_INDEX, load_model


# What the steps timed in this process say of the next run's: the curve of the last run's steps
# (`curve_so_far`), by (device, precision, Winograd, layers ...). The first frames of a run
# know only its first step, which also computes the targets and warms up its buffers: by that alone,
# the seconds left at a run's first frame in a warm server were off by up to a fifth. A server's runs
# follow each other on the same cores, so the earlier steps stand beside the first ones, as a run's
# finished scales do for the next.
_STEP_CURVES: dict[tuple, StepCurve] = {}


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
    seconds_left: float = 0.0  # to the end of the run, by `estimate_seconds_left`; 0 when done


def stylize(content: ImageSource, styles: ImageSource | Sequence[ImageSource], settings: Settings = Settings(),
            on_step: Callable[[int, Tensor], None] | None = None, mask: ImageSource | None = None) -> Iterator[Frame]:
    """Optimise a picture with `content`'s arrangement in the style of `styles`, yielding Frames.

    Images are PIL images of any mode, or files or bytes, taken as `images.open_image` takes them.
    `mask` (any size; a PIL image is taken as it is, a file or bytes as `images.open_mask` reads them)
    says where the style goes: white takes the first style; black keeps the photo, or takes the
    second style when there are two; grey blends. With one style, each picture shown is the photo
    and the optimised picture blended through the (feathered) mask.

    Frames come at most every `settings.frame_interval` seconds, and always at the end (`done`).
    Closing the generator stops the work at the frame it is paused on; no VGG pass runs after that.
    `on_step(step, picture)`, if given, is called after every step with the picture being optimised
    (at the current scale, RGB in [0, 1], before any photo is put back; the tensor itself, not a copy).
    """
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
    runtime = Runtime.for_settings(settings)
    runtime.prepare()
    started = time.perf_counter()
    model = load_model(settings.weights, settings.pooling, str(runtime.device))
    content_full, style_full, colour_source = _load(content, styles, settings, runtime.device)
    mask_full = None if mask is None else images.load_mask(mask, tuple(content_full.shape[-2:]), settings.mask_feather, runtime.device)
    aspect = max(content_full.shape[-2:]) / min(content_full.shape[-2:])
    schedule = scale_schedule(settings.size, settings.steps, settings.multiscale, aspect)
    health = _Health(runtime.device)
    framing = _Framing()
    # steps timed with these layers here: by earlier runs in this process, and by this run's finished
    # scales ({pixels: seconds a step}, as the coarse scales' layers cost)
    pace_key = (str(runtime.device), runtime.precision, runtime.winograd, settings.content_layer, *sorted(settings.style_layers))
    earlier_runs, run_paces = _STEP_CURVES.get(pace_key, StepCurve()), {}
    last_scale_cost = 1.0 if scale_settings(settings, last_scale=False) == settings else DEEP_LAYERS_STEP_COST
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
                     message, tuple(picture.shape[-2:]), seconds_left)

    for scale_index, (side, scale_steps) in enumerate(schedule):
        scaled_size = images.working_size(content_full.shape[-1], content_full.shape[-2], side, "content image")
        content_scaled = images.resize(content_full, scaled_size)
        mask_scaled = None if mask_full is None else F.interpolate(mask_full, size=scaled_size, mode="area")
        pixels = scaled_size[0] * scaled_size[1]
        layers_cost = last_scale_cost if scale_index == len(schedule) - 1 else 1.0  # the curve's steps are the coarse scales'
        foreseen = curve_so_far(earlier_runs, run_paces).seconds(pixels)
        foreseen = None if foreseen is None else foreseen * layers_cost
        objective = Objective(model, content_scaled, style_full, scale_settings(settings, scale_index == len(schedule) - 1),
                              runtime, mask_scaled, style_reading_side=style_reading_side(max(scaled_size), settings.size))
        if image is not None and (message := health.failure(image, step, last_good_step)):
            yield frame(last_good, True, message)
            return
        if image is None:
            image = _initial_image(settings.init, content_scaled, style_full[0], settings.seed)
        else:
            image = _finer(image.detach(), content_scaled, settings.init)
        # Contiguous, as L-BFGS flattens it; the channels-last weights make the activations channels-last.
        image = image.contiguous().requires_grad_(True)
        optimizer = make_optimizer(settings.optimizer, image)
        last_good, last_good_step = image.detach().clone(), step
        values = {}
        closure = runtime.accelerated(_closure(optimizer, objective, image, values), scale_steps)

        scale_started = steady_since = time.perf_counter()
        for scale_step in range(1, scale_steps + 1):
            optimizer.step(closure)
            if scale_step == 1:
                steady_since = time.perf_counter()
                framing.restart_scale()
            step += 1
            health.record(step, values["total"])
            if on_step is not None:
                on_step(step, image.detach())
            final, now = step == settings.steps, time.perf_counter()
            # kept before the last frame, after which the consumer may ask for no more; a scale of one
            # step has no pace apart from its targets
            if scale_step == scale_steps > 1:
                run_paces[pixels] = _steady_pace(scale_started, steady_since, now, scale_steps, framing.since_steady) / layers_cost
                _STEP_CURVES[pace_key] = curve_so_far(earlier_runs, run_paces, pixels if layers_cost != 1 else None)
            if not final and now - last_frame < settings.frame_interval:
                continue
            last_frame = now
            if message := health.failure(image, step, last_good_step):
                yield frame(last_good, True, message)
                return
            last_good, last_good_step = image.detach().clone(), step
            pace = blended_pace(_steady_pace(scale_started, steady_since, now, scale_step, framing.since_steady), scale_step, foreseen)
            # this scale's pace joins what foretells the sizes to come once it has a step after its first
            overhead = foretelling_overhead(earlier_runs, {**run_paces, pixels: pace / layers_cost} if scale_step > 1 else run_paces)
            yield frame(last_good, final, seconds_left=estimate_seconds_left(
                schedule, scale_index, scale_step, pace, aspect, overhead, framing.mean(), settings.frame_interval,
                last_scale_cost))
            framing.add(time.perf_counter() - now)


def scale_settings(settings: Settings, last_scale: bool) -> Settings:
    """What a scale optimises with: before the last scale, only the style layers above block 4.

    At a coarse size a deep layer's field takes in the painting's objects whole (a coin is a blob to
    relu4_1 at 128 px) and draws them, large, into the picture, where the last scale keeps them.
    Colour and texture come from the shallow layers; the deep ones join at full size, where they see
    parts of objects. The shallow layers keep their weights. A run with no shallow style layer keeps
    all of its layers at every scale."""
    shallow = [(layer, weight) for layer, weight in zip(settings.style_layers, settings.style_layer_weights, strict=True)
               if LAYER_INDEX[layer] < LAYER_INDEX["conv4_1"]]
    if last_scale or not shallow:
        return settings
    layers, weights = zip(*shallow, strict=True)
    return replace(settings, style_layers=layers, style_layer_weights=weights)


def _steady_pace(scale_started: float, steady_since: float, now: float, steps_done: int, framing: float) -> float:
    """Seconds a step of a scale computes, after its first step (which also warms up its buffers),
    leaving out the `framing` seconds spent on frames since then."""
    return (now - steady_since - framing) / (steps_done - 1) if steps_done > 1 else now - scale_started


class _Framing:
    """The seconds spent on frames: making each and waiting for its consumer, who may encode, send or
    save it before asking for the next. Until a run's first frame has been taken, the last run's
    frames in this process stand in (a server's consumer is the same from run to run)."""

    last_run_mean = 0.0

    def __init__(self):
        self.total, self.count, self.since_steady = 0.0, 0, 0.0

    def restart_scale(self) -> None:
        self.since_steady = 0.0

    def add(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1
        self.since_steady += seconds
        _Framing.last_run_mean = self.mean()

    def mean(self) -> float:
        return self.total / self.count if self.count else _Framing.last_run_mean


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
    size), as the first scale took all of the photo: upscaled alone, the picture starts blurred and
    the finer scale's steps go to sharpening it again. On three quality panel pairs at 512 px and the
    same steps, the result came 5-17% closer to the photo (content distance) and 2-5% further from
    the painting; with it, fewer steps at the dear finest scale keep as much of the photo."""
    upscaled = images.resize(image, tuple(content.shape[-2:]))
    if init != "content":
        return upscaled
    blurred = images.resize(images.resize(content, tuple(image.shape[-2:])), tuple(content.shape[-2:]))
    return (upscaled + content - blurred).clamp(0, 1)


def _closure(optimizer, objective: Objective, image: Tensor, values: dict[str, Tensor]) -> Callable[[], Tensor]:
    """One evaluation: the loss terms into `values`, gradients into `image.grad`; returns the total."""

    def closure() -> Tensor:
        optimizer.zero_grad()
        values.clear()  # drop the last evaluation's autograd graph before building the next
        values.update(objective(image))
        values["total"].backward()
        return values["total"]

    return closure


def warm_up(settings: Settings = Settings()) -> None:
    """Load the network, its Winograd filters and the optimisers' code now (the first torch optimiser
    made in a process imports torch._dynamo), so that the first request starts at full speed, and
    time a few steps at the two coarse scales of a 384 px run (128 and 222 px), so that its first
    frames foresee the time left: how long a step takes, and how much dearer a larger one is on this
    machine. Both compute the coarse scales' layers, as `StepCurve` counts; a last scale's steps also
    compute the deep ones, which DEEP_LAYERS_STEP_COST only guesses. It stops at the last scale's
    first frame."""
    settings = settings.validated()
    for name in OPTIMIZERS:
        make_optimizer(name, torch.zeros(1, requires_grad=True))
    # 3:2, the commonest photo's shape; what it shows costs nothing more
    side = 3 * MIN_SCALE_SIDE
    picture = Image.effect_noise((side, side * 2 // 3), 64).convert("RGB")
    # 10 steps at 128 px and 5 at 222 px, whose paces the fit rests on (with 3 there, 2 were steady)
    frames = stylize(picture, picture, replace(settings, size=side, steps=18, multiscale=True, frame_interval=0))
    for frame in frames:
        if max(frame.size) == side:
            frames.close()
            break
