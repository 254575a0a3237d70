"""Gatys style transfer as a generator of progress frames: the loop, scales coarse to fine and steps within each.

What is optimised is in `nst.objective` (its terms in `nst.terms`), what a run is made of in
`nst.run`, what watches the loop in `nst.observers`, where and how fast in `nst.runtime`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import images, run, tiles
from .checkpoint import Checkpoint, CheckpointError, Interrupted, fingerprint, marks_its_update, step_finished, step_torn
from .images import ImageSource
from .memory import LARGE_PICTURE, release_freed_memory
from .objective import Look, Objective, tile_plan
from .observers import Frame, Frames, Health, Position
from .optimizers import make_optimizer
from .runtime import Runtime
from .schedule import LOOK_SIDE, adds_detail, style_reading_side
from .settings import Settings
from .timeleft import TimeLeft, step_work
from .vgg import load_model


def stylize(content: ImageSource, styles: ImageSource | Sequence[ImageSource], settings: Settings = Settings(),
            on_step: Callable[[int, Tensor], None] | None = None, mask: ImageSource | None = None,
            resume: Checkpoint | str | os.PathLike | None = None, start: Tensor | None = None,
            extra_terms: Callable[[tuple[int, int], torch.device], list] | None = None) -> Iterator[Frame]:
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

    A clip's frames (`nst.sequence`) also give `start`, a picture (1, 3, H, W) in [0, 1] the first
    scale starts from in place of `settings.init`, and `extra_terms(size, device)`, more terms
    (`nst.terms`) for each scale's objective.
    """
    position = Position()
    try:
        yield from _stylize(content, styles, settings, on_step, mask, resume, position, start, extra_terms)
    except KeyboardInterrupt:
        raise Interrupted(None if step_torn() else position.checkpoint()) from None


def _stylize(content, styles, settings: Settings, on_step, mask, resume, position: Position, start, extra_terms) -> Iterator[Frame]:
    content, styles, mask, settings = run.checked_inputs(content, styles, mask, settings)
    position.settings, position.style_count = settings, len(styles)
    position.fingerprint = functools.cache(lambda: fingerprint(content, styles, mask))
    if resume is not None:
        resume = resume if isinstance(resume, Checkpoint) else Checkpoint.load(resume)
        resume.check_resumes(settings, position.fingerprint())
    runtime = Runtime.for_settings(settings)
    runtime.prepare()
    position.started = time.perf_counter() - (resume.elapsed if resume else 0.0)
    model = load_model(settings.weights, settings.pooling, str(runtime.device))
    inputs = run.Inputs.load(content, styles, mask, settings, runtime.device)
    scales = run.scales(settings, inputs.content, resume)
    clock = TimeLeft([step_work(*scale.size, run.deepest(scale.settings)) * tiles.step_cost(tile_plan(scale.settings, scale.size,
                                                                                                        runtime.device))
                      for scale in scales], [scale.to_take for scale in scales], settings.frame_interval)
    frames = Frames(settings, inputs, runtime.device.type, runtime.precision, position)
    yield from _loop(scales, _Scaled(model, inputs, runtime, settings, resume, start, extra_terms), clock, frames, position, on_step)


def _loop(scales: list[run.Scale], scaled: _Scaled, clock: TimeLeft, frames: Frames, position: Position, on_step) -> Iterator[Frame]:
    """The scales coarse to fine, the steps within each; a frame where one is due, and the last good
    picture, in a frame that ends the run, as soon as a loss or the picture is not finite."""
    health, image, step, values = Health(scaled.runtime.device), None, 0, {}
    for scale in scales:
        if scale.first_step > scale.steps:  # a scale a checkpoint had finished
            image, step = scaled.resumed_picture(scale, image, position)
            last_good, last_good_step = image, step
            continue
        objective = optimizer = closure = None  # the last scale's: freed before this one's targets are made
        objective = scaled.objective(scale)
        step = scaled.resume.step if scaled.resumes_in(scale) else step
        if image is not None and (message := health.failure(image, step, last_good_step)):
            yield frames.make(last_good, step, values, True, message)
            return
        image = scaled.start_picture(scale, image)
        optimizer, values = scaled.optimizer(scale, image), {}
        last_good, last_good_step = image.detach().clone(), step
        closure = marks_its_update(scaled.runtime.accelerated(_closure(optimizer, objective, image, values), scale.steps,
                                                              capturable=objective.tiles is None))
        position.at = (scale.index, step, image, optimizer.state_dict)
        clock.start_scale(scale.index, time.perf_counter())
        for scale_step in range(scale.first_step, scale.steps + 1):
            optimizer.step(closure)
            if objective.tiles is not None:  # a tiled scale hands freed memory back after each step (docs/method.md)
                release_freed_memory()
            clock.step_done(scale_step - scale.first_step + 1, time.perf_counter())
            step += 1
            position.at = (scale.index, step, image, optimizer.state_dict)
            step_finished()
            health.record(step, values["total"])
            if on_step is not None:
                on_step(step, image.detach())
            final, now = step == scaled.settings.steps, time.perf_counter()
            if not frames.due(final, now):
                continue
            if message := health.failure(image, step, last_good_step):
                yield frames.make(last_good, step, values, True, message)
                return
            last_good.copy_(image.detach())  # into its block: no picture-sized block made anew each frame
            last_good_step = step
            yield frames.make(last_good, step, values, final, seconds_left=clock.seconds_left(scale_step - scale.first_step + 1, now))
            clock.frame_shown(time.perf_counter() - now)


class _Scaled:
    """A run's parts for each scale: its objective (and `photo`, the photo at the scale's size), the
    picture it starts from (where a checkpoint resumes, the checkpoint's), and its optimiser."""

    def __init__(self, model, inputs: run.Inputs, runtime: Runtime, settings: Settings, resume: Checkpoint | None,
                 start: Tensor | None = None, extra_terms=None):
        self.model, self.inputs, self.runtime, self.settings, self.resume = model, inputs, runtime, settings, resume
        self.start, self.extra_terms = start, extra_terms

    def resumes_in(self, scale: run.Scale) -> bool:
        return self.resume is not None and scale.index == self.resume.scale

    def resumed_picture(self, scale: run.Scale, image: Tensor | None, position: Position) -> tuple[Tensor | None, int]:
        """Past a scale the checkpoint had finished: the checkpoint's picture where it was taken."""
        if not self.resumes_in(scale):
            return image, self.resume.step
        image = self.resume.picture.to(self.runtime.device)
        position.at = (scale.index, self.resume.step, image, lambda: self.resume.optimizer)
        return image, self.resume.step

    def objective(self, scale: run.Scale) -> Objective:
        if max(scale.size) > LARGE_PICTURE:  # the last scale's memory handed back, where the process keeps freed memory
            release_freed_memory()
        self.photo = images.resize(self.inputs.content, scale.size)
        look = self.look if adds_detail(max(scale.size), self.settings.multiscale) else None
        objective = self._objective_at(self.photo, scale.settings, look)
        if objective.tiles is not None:  # its targets' memory handed back before the first step
            release_freed_memory()
        if self.extra_terms is not None:
            objective.terms += self.extra_terms(scale.size, self.runtime.device)
        return objective

    @functools.cached_property
    def look(self) -> Look:
        """The look term of the scales above LOOK_SIDE: the objective of the run's scale of that side, made once."""
        size = images.working_size(self.inputs.content.shape[-1], self.inputs.content.shape[-2], LOOK_SIDE, "content image")
        return Look(self._objective_at(images.resize(self.inputs.content, size), run.scale_settings(self.settings, all_layers=True)), size)

    def _objective_at(self, photo: Tensor, settings: Settings, look: Look | None = None) -> Objective:
        """The objective of a picture of the size of `photo` (the run's photo at that size): the mask and the paintings' reading there."""
        size = tuple(photo.shape[-2:])
        mask = None if self.inputs.mask is None else F.interpolate(self.inputs.mask, size=size, mode="area")
        reading = functools.partial(style_reading_side, max(size), self.settings.size, multiscale=self.settings.multiscale)
        return Objective(self.model, photo, self.inputs.styles, settings, self.runtime, mask, style_reading_side=reading, look=look)

    def start_picture(self, scale: run.Scale, coarser: Tensor | None) -> Tensor:
        """The picture a scale starts from, contiguous (L-BFGS flattens it) and requiring its gradient."""
        if self.resumes_in(scale):
            image = self.resume.picture.to(self.runtime.device)
        elif coarser is None and self.start is not None:
            image = images.resize(self.start.to(self.runtime.device), scale.size).detach().clone()
        elif coarser is None:
            image = run.initial_picture(self.settings.init, self.photo, self.inputs.styles[0], self.settings.seed)
        else:
            detail = adds_detail(max(scale.size), self.settings.multiscale)
            image = run.finer_picture(coarser.detach(), self.photo, self.settings.init, detail)
        return image.contiguous().requires_grad_(True)

    def optimizer(self, scale: run.Scale, image: Tensor):
        optimizer = make_optimizer(self.settings.optimizer, image)
        if self.resumes_in(scale):
            try:
                optimizer.load_state_dict(self.resume.optimizer)
            except (KeyError, TypeError, ValueError) as error:
                raise CheckpointError(f"the checkpoint's optimiser state does not fit this run: {error}") from error
        return optimizer


def _closure(optimizer, objective: Objective, image: Tensor, values: dict[str, Tensor]) -> Callable[[], Tensor]:
    """One evaluation: the loss terms into `values`, gradients into `image.grad` (of the whole picture
    at once, or tile by tile); returns the total."""

    def closure() -> Tensor:
        optimizer.zero_grad()
        values.clear()  # drop the last evaluation's autograd graph before building the next
        values.update(objective.loss_and_gradient(image))
        return values["total"]

    return closure
