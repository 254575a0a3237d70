"""What a run is made of before it loops: its checked inputs as tensors, its scales (coarse to fine,
`nst.schedule`), where a checkpoint resumes it, and the picture each scale starts from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from PIL import Image
from torch import Tensor

from . import images
from .checkpoint import Checkpoint, CheckpointError
from .images import ImageError, ImageSource
from .schedule import LOOK_SIDE, scale_schedule
from .settings import Settings, SettingsError
from .layers import LAYER_INDEX


def checked_inputs(content: ImageSource, styles: ImageSource | Sequence[ImageSource], mask: ImageSource | None,
                   settings: Settings) -> tuple[Image.Image, list[Image.Image], Image.Image | None, Settings]:
    """The images decoded and the settings validated for them; ImageError or SettingsError for what cannot run."""
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
    return content, styles, mask, settings


@dataclass(frozen=True)
class Inputs:
    """The photo, the paintings and the mask as tensors at the result's size, prepared for the colour
    mode; `colour_source` is the photo whose colours a luminance-only result takes (else None)."""

    content: Tensor
    styles: list[Tensor]
    mask: Tensor | None
    colour_source: Image.Image | None

    @classmethod
    def load(cls, content: Image.Image, styles: list[Image.Image], mask: Image.Image | None, settings: Settings,
             device: torch.device) -> Inputs:
        colour_source = None
        if settings.preserve_colors == "luminance":
            colour_source = content.resize(images.working_size(content.width, content.height, settings.size, "content image")[::-1],
                                           Image.Resampling.BICUBIC)
            content, styles = images.greyscale(content), [images.greyscale(style) for style in styles]
        content_full = images.load_tensor(content, settings.size, device, "content image")
        # Each scale reads the paintings at its own size (nst.schedule): kept here at no more than their own resolution.
        style_full = [images.load_style_tensor(style, min(round(settings.size * settings.style_scale), max(style.size)), device, what)
                      for style, what in zip(styles, images.style_names(len(styles)), strict=True)]
        if settings.preserve_colors == "histogram":
            style_full = [images.match_histogram(style, content_full) for style in style_full]
        elif settings.preserve_colors == "luminance":
            style_full = [images.match_luminance(style, content_full) for style in style_full]
        mask_full = None if mask is None else images.load_mask(mask, tuple(content_full.shape[-2:]), settings.mask_feather, device)
        return cls(content_full, style_full, mask_full, colour_source)


@dataclass(frozen=True)
class Scale:
    """One size of the schedule: its picture's (height, width), its steps, the first of them to take
    (later than 1 where a checkpoint resumes inside it, past `steps` where one had finished it), and
    the settings it optimises with."""

    index: int
    size: tuple[int, int]
    steps: int
    first_step: int
    settings: Settings

    @property
    def to_take(self) -> int:
        return self.steps - self.first_step + 1


def scales(settings: Settings, content: Tensor, resume: Checkpoint | None) -> list[Scale]:
    """The run's scales, coarse to fine; CheckpointError where `resume` does not fit them."""
    aspect = max(content.shape[-2:]) / min(content.shape[-2:])
    schedule = scale_schedule(settings.size, settings.steps, settings.multiscale, aspect)
    sizes = [images.working_size(content.shape[-1], content.shape[-2], side, "content image") for side, _ in schedule]
    first_steps = [1] * len(schedule)
    if resume is not None:
        first_steps[resume.scale] = _resumed_scale_step(resume, schedule, sizes)
        first_steps[: resume.scale] = [n + 1 for _, n in schedule[: resume.scale]]
    return [Scale(index, size, steps, first, scale_settings(settings, index == len(schedule) - 1 or side == LOOK_SIDE))
            for index, (size, (side, steps), first) in enumerate(zip(sizes, schedule, first_steps))]


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


def scale_settings(settings: Settings, all_layers: bool) -> Settings:
    """What a scale optimises with: all style layers at the last scale and at LOOK_SIDE (where a larger
    picture's look is set, as a run of that size sets it); before, only the style layers above block 4.

    At a coarse size a deep layer's field takes in the painting's objects whole and draws them, large,
    into the picture; at full size it sees parts of objects (docs/method.md). A run with no shallow
    style layer keeps all of its layers at every scale."""
    shallow = [(layer, weight) for layer, weight in zip(settings.style_layers, settings.style_layer_weights, strict=True)
               if LAYER_INDEX[layer] < LAYER_INDEX["conv4_1"]]
    if all_layers or not shallow:
        return settings
    layers, weights = zip(*shallow, strict=True)
    return replace(settings, style_layers=layers, style_layer_weights=weights)


def deepest(settings: Settings) -> str:
    """The deepest layer a scale's objective reads, up to which the network runs."""
    return max((settings.content_layer, *settings.style_layers), key=LAYER_INDEX.__getitem__)


def initial_picture(init: str, content: Tensor, style: Tensor, seed: int) -> Tensor:
    if init == "content":
        return content.detach().clone()
    if init == "style":
        return images.resize(style, tuple(content.shape[-2:])).detach().clone()
    return torch.rand(content.shape, generator=torch.Generator().manual_seed(seed)).to(content.device)


def finer_picture(image: Tensor, content: Tensor, init: str, adds_detail: bool = False) -> Tensor:
    """The picture of a coarser scale at `content`'s size. Started from the photo, it also takes the
    photo's detail that the coarser scale could not hold (the photo less its copy through the coarse
    size): upscaled alone, it starts blurred and the dear finest steps go to sharpening it again
    (docs/method.md, coarse to fine). A scale that `adds_detail` above LOOK_SIDE starts from the
    picture upscaled alone: the detail it adds is the painting's, not the photo's."""
    upscaled = images.resize(image, tuple(content.shape[-2:]))
    if init != "content" or adds_detail:
        return upscaled
    blurred = images.resize(images.resize(content, tuple(image.shape[-2:])), tuple(content.shape[-2:]))
    return (upscaled + content - blurred).clamp(0, 1)
