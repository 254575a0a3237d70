"""What the app's events do: a run for the page (Stylize, Stop) and for the API (/stylize, also an MCP
tool), the brush's canvas, the gallery, and restoring a result's settings. The layout and its wiring
are in app.py; what a request may be is in server_policy.py."""

from __future__ import annotations

import atexit
import contextlib
import inspect
import itertools
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image, ImageChops

import nst
from nst import ImageError, Settings, SettingsError, WeightsError, save_png, scale_schedule, settings_from_picture
from nst.memory import release_freed_memory
from nst.settings import check_number, declaration, format_number
from nst.timelapse import Timelapse
from server_policy import (CACHE_SECONDS, SERVER_WEIGHTS, bounds, capacity, on_zero_gpu, parse_request, refuse, time_limit,
                           uploaded)

EXAMPLES = Path(__file__).resolve().parent / "examples"
DEFAULTS = Settings()
# "Style strength" s, from 1 (a light touch) to 10 (fully painted), is the style weight on a log scale:
# DEFAULTS.style_weight at DEFAULT_STRENGTH, STRENGTH_FACTOR times more for each step up.
DEFAULT_STRENGTH = 5.0
STRENGTH_FACTOR = 2.0
LOSS_TERMS = ("content", "style", "total")


def strength_to_weight(strength: float) -> float:
    return DEFAULTS.style_weight * STRENGTH_FACTOR ** (strength - DEFAULT_STRENGTH)


def weight_to_strength(weight: float) -> float:
    return DEFAULT_STRENGTH + math.log(max(weight, 1e-12) / DEFAULTS.style_weight, STRENGTH_FACTOR)


def removed_at_exit(folder: Path) -> Path:
    """A folder of the server's, removed when the server's process exits (not when a run forked from it
    does), so that servers started and stopped over and over leave nothing in the temporary folder."""
    owner = os.getpid()

    def remove():
        if os.getpid() == owner:
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
    return folder


# --- Stop -----------------------------------------------------------------------------------------------

class StopRequests:
    """Stop flags, one per run, which the run reads at each frame and ends on, keeping its picture.

    Cancelling the event instead could leave red "Error" badges over the outputs. A click on Stylize
    arms its run's flag at once, before the queue, so Stop reaches runs still waiting too; Stop sets
    every flag of its session. A flag is a file, so that a run in another process (ZeroGPU forks one
    per call) sees it.
    """

    def __init__(self):
        self._folder: Path | None = None
        self._lock = threading.RLock()
        self._sessions: dict[str, set[str]] = {}

    @property
    def folder(self) -> Path:
        """The flags' folder, made on first use, which `arm` makes: in the server's process, before a run forks from it."""
        with self._lock:
            if self._folder is None:
                self._folder = removed_at_exit(Path(tempfile.mkdtemp(prefix="nst-stops-")))
            return self._folder

    def arm(self, session: str) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._sessions.setdefault(session, set()).add(token)
            _ = self.folder  # made now, if not yet
        return token

    @contextlib.contextmanager
    def running(self, session: str, token: str | None = None) -> Iterator[str]:
        """The flag's token of a run starting now: the one its click armed, or a new one."""
        token = token if token and token.isalnum() else self.arm(session)
        try:
            yield token
        finally:
            with self._lock:
                self._sessions.get(session, set()).discard(token)
            (self.folder / token).unlink(missing_ok=True)

    def stopped(self, token: str) -> bool:
        return (self.folder / token).exists()

    def stop(self, session: str) -> None:
        with self._lock:
            tokens = list(self._sessions.get(session, ()))
        for token in tokens:
            (self.folder / token).touch()

    def forget(self, session: str) -> None:
        with self._lock:
            tokens = self._sessions.pop(session, set())
        for token in tokens:
            (self.folder / token).unlink(missing_ok=True)


stop_requests = StopRequests()


def arm_stop(request: gr.Request) -> str:
    """Stylize was clicked: the run it queues can be stopped before it starts. Its token goes with it."""
    return stop_requests.arm(request.session_hash)


def request_stop(request: gr.Request) -> None:
    """Stop this session's run at its next frame, or before it starts if it is still waiting."""
    stop_requests.stop(request.session_hash)


def forget_session(request: gr.Request) -> None:
    stop_requests.forget(request.session_hash)


# --- One run, shared by the page and the API ---------------------------------------------------------

def status_line(frame, state: str | None = None) -> str:
    per_step = frame.elapsed / max(frame.step, 1)
    state = state or ("done" if frame.done else f"~{frame.seconds_left:.0f} s left")
    return (f"step {frame.step}/{frame.steps} · {frame.size[1]}×{frame.size[0]} px · {frame.elapsed:.1f} s · "
            f"{per_step:.2f} s/step · {state} · {frame.device} {frame.precision}")


def run_frames(content, styles, settings: Settings, mask, token: str):
    """Yields (frame, status, finished) as the picture forms: finished on the last frame, also
    when the run stops early (Stop, the time limit, a NaN). Errors after the first frame end the
    run with a warning and the last picture; before it, they are refused with gr.Error. On ZeroGPU
    this runs in a process of its own (see on_zero_gpu)."""
    seconds = time_limit(settings)
    frame = None
    try:
        if stop_requests.stopped(token):
            return
        frames = nst.stylize(content, styles, settings, mask=mask)
        for frame in frames:
            status, finished = status_line(frame), frame.done
            if frame.message:
                gr.Warning(frame.message)
                status = f"stopped: {frame.message}"
            elif not finished and stop_requests.stopped(token):
                frames.close()
                status, finished = f"Stopped. {status_line(frame, 'stopped')}", True
            elif not finished and frame.elapsed > seconds:
                frames.close()
                status, finished = f"stopped at the time limit of {seconds} s per picture: {status_line(frame, 'stopped')}", True
            yield frame, status, finished
            if finished:
                return
    except (ImageError, SettingsError, WeightsError) as error:
        message = str(error)
    except Exception as error:  # out of memory and the like: say what, log where, keep serving
        logging.exception("stylize failed")
        message = f"the run failed ({type(error).__name__}); try a smaller size or fewer style layers"
    else:
        return
    finally:  # finished, failed or cancelled: an idle server gives its working memory back
        release_freed_memory()
    if frame is None:
        raise refuse(message)
    gr.Warning(message)  # keep the last good picture on screen instead of an error badge
    yield frame, f"stopped: {message}", True


frames_on_device = on_zero_gpu(run_frames)


class Results:
    """Where a run's files go: the final PNG (with its settings) and the timelapse. Gradio copies
    what a run returns into its own cache, which it cleans; these folders go when they are older
    than the cache's files (checked at each run's start)."""

    root = Path(tempfile.gettempdir()) / f"nst-results-{os.getpid()}"

    def __init__(self):
        try:
            self.root.mkdir()
        except FileExistsError:
            pass
        else:
            removed_at_exit(self.root)
        for old in self.root.iterdir():
            if time.time() - old.stat().st_mtime > CACHE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        self.folder = Path(tempfile.mkdtemp(dir=self.root))
        self.timelapse = Timelapse()

    def picture(self, frame, settings: Settings) -> str:
        path = self.folder / "stylized.png"
        save_png(frame.image, path, settings)
        return str(path)

    def animation(self, frame) -> str:
        self.timelapse.finish(frame.image)
        path = self.folder / "timelapse.webp"
        self.timelapse.save(path)
        return str(path)


# --- The page's Stylize button ------------------------------------------------------------------------

def stylize_page(content, style, style_strength, content_weight_log, steps, size, style_layers, content_layer, optimizer, init,
                 preserve_colors, multiscale, tv_weight, style_scale, pooling, seed, weights, second_style, second_style_share,
                 painting, mask, mask_feather, token, request: gr.Request):
    """Streams (picture, loss plot, status, before/after, timelapse) to the page as the picture forms."""
    try:
        check_number("style strength", style_strength, 1, 10)
        check_number("content weight (log10)", content_weight_log, -3, math.log10(declaration("content_weight").declaration.high))
        check_number("share of the second style", second_style_share, 0, 1)
    except SettingsError as error:
        raise refuse(str(error)) from None
    with_second = second_style is not None and second_style_share > 0
    strokes = painted_mask(painting)  # strokes replace an example's mask
    content_image, styles, settings, mask_image = parse_request(
        content, style, second_style if with_second else None, mask if strokes is None else None, mask_feather=mask_feather,
        style_weight=strength_to_weight(style_strength),
        content_weight=10 ** content_weight_log, steps=steps, size=size, style_layers=style_layers, content_layer=content_layer,
        optimizer=optimizer, init=init, preserve_colors=preserve_colors, multiscale=multiscale, tv_weight=tv_weight,
        style_scale=style_scale, pooling=pooling, seed=seed, weights=weights,
        style_blend=(1 - second_style_share, second_style_share) if with_second and mask is None and strokes is None else None)
    mask_image = mask_image if strokes is None else strokes
    results, plot = Results(), None
    with stop_requests.running(request.session_hash if request else "", token) as token:
        for frame, status, finished in frames_on_device(content_image, styles, settings, mask_image, token):
            plot = plot or LossPlot(settings, frame)
            plot.add(frame)
            results.timelapse.add(frame.image)
            if not finished:
                yield frame.image, plot.figure(), status, gr.skip(), gr.skip()
                continue
            comparison = gr.ImageSlider(value=(content_image.resize(frame.image.size), frame.image), visible=True)
            yield results.picture(frame, settings), plot.figure(), status, comparison, gr.skip()
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.File(value=results.animation(frame), visible=True)
    if plot is None:
        yield gr.skip(), gr.skip(), "Stopped before it started.", gr.skip(), gr.skip()


class LossPlot:
    """The loss plot: each term on a log10 axis, and a line named "→ 256 px" where each finer scale
    starts; the x axis ends at the last step. The page's plot takes its legend from the series in
    its first data and keeps it, so every series gets an empty point from the first frame on."""

    def __init__(self, settings: Settings, first_frame):
        width, height = first_frame.image.size  # at the size of the result
        schedule = scale_schedule(settings.size, settings.steps, settings.multiscale, max(height, width) / min(height, width))
        starts = itertools.accumulate(steps for _, steps in schedule)
        self.scale_changes = [(start + 1, f"→ {side} px") for start, (side, _) in zip(starts, schedule[1:])]
        series = [*LOSS_TERMS, *(label for _, label in self.scale_changes)]
        self.steps, self.rows = settings.steps, [{"step": 0, "log10 loss": None, "series": name} for name in series]
        self.colours = dict(zip(series, ["#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f", "#aaaaaa", "#555555", "#cccccc"], strict=False))

    def add(self, frame) -> None:
        # a term at zero (the content term of the first step) has no place on a log axis
        self.rows += [{"step": frame.step, "log10 loss": math.log10(frame.losses[term]), "series": term}
                      for term in LOSS_TERMS if math.isfinite(frame.losses[term]) and frame.losses[term] > 0]
        while self.scale_changes and self.scale_changes[0][0] <= frame.step:
            step, label = self.scale_changes.pop(0)
            values = [row["log10 loss"] for row in self.rows if row["series"] in LOSS_TERMS and row["log10 loss"] is not None]
            self.rows += [{"step": step, "log10 loss": value, "series": label} for value in (min(values), max(values))]

    def figure(self) -> gr.LinePlot:
        return gr.LinePlot(pd.DataFrame(self.rows), x_lim=[0, self.steps], color_map=self.colours)


# --- The API: /stylize with the settings' names, and an MCP tool ---------------------------------------

def stylize(content: dict, style: dict, size: int = DEFAULTS.size, steps: int = DEFAULTS.steps,
            style_weight: float = DEFAULTS.style_weight, content_weight: float = DEFAULTS.content_weight,
            tv_weight: float = DEFAULTS.tv_weight, style_layers: list[str] = list(DEFAULTS.style_layers),  # noqa: B006
            style_layer_weights: list[float] | None = DEFAULTS.style_layer_weights, content_layer: str = DEFAULTS.content_layer,
            style_scale: float = DEFAULTS.style_scale, init: str = DEFAULTS.init,
            preserve_colors: str = DEFAULTS.preserve_colors, multiscale: bool = DEFAULTS.multiscale, pooling: str = DEFAULTS.pooling,
            optimizer: str = DEFAULTS.optimizer, seed: int = DEFAULTS.seed, weights: str = DEFAULTS.weights,
            mask_feather: float = DEFAULTS.mask_feather, second_style: dict | None = None, style_blend: list[float] | None = None,
            mask: dict | None = None, request: gr.Request = None):
    """Repaint a photo in the style of a painting (Gatys et al. neural style transfer with VGG19).

    Streams (picture, status, progress, timelapse) while the picture forms: the picture at the size
    of the result, a status line, the step, losses and estimated seconds left. The finished picture
    is a PNG that carries its settings; then the timelapse, an animated WebP of it forming, follows.
    (Its arguments' help, below the summary, is made from the settings' declarations.)
    """
    values = {name: value for name, value in locals().items() if name not in ("content", "style", "second_style", "mask", "request")}
    content_image, styles, settings, mask_image = parse_request(content, style, second_style, mask, **values)
    results = Results()
    with stop_requests.running(request.session_hash if request else "") as token:
        for frame, status, finished in frames_on_device(content_image, styles, settings, mask_image, token):
            results.timelapse.add(frame.image)
            progress = {"step": frame.step, "steps": frame.steps, "size": list(frame.size), "losses": frame.losses,
                        "elapsed": round(frame.elapsed, 3), "seconds_left": round(frame.seconds_left, 1), "done": finished}
            if not finished:
                yield frame.image, status, progress, None
                continue
            picture = results.picture(frame, settings)
            yield picture, status, progress, None
            yield picture, status, progress, results.animation(frame)


NUMBERS_OR_NULL = {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "null"}]}


API_IMAGES = {"content": "the photo whose arrangement is kept (an image file)",
              "style": "the painting whose textures and colours are taken (an image file)",
              "second_style": "an optional second painting: blended with the first, or, with a mask, where the mask is black",
              "mask": "an optional image of where the style goes: white takes the style, black keeps the photo (or takes the "
                      "second style), grey blends; a transparent image's alpha counts, so a brush layer works as it is"}
STYLE_BLEND_HELP = "with a second style and no mask, the weight of each style image (default: equal)"


def api_help(name: str) -> str:
    """One line on an API parameter: from the setting's declaration, with its range on this server."""
    if name in API_IMAGES:
        return API_IMAGES[name]
    if name == "style_blend":
        return STYLE_BLEND_HELP
    declared = declaration(name)
    if name == "weights":
        return f"VGG19 weights: {', '.join(SERVER_WEIGHTS)}"
    if declared.default is None and declared.declaration.one_per:
        return f"{declared.declaration.help} (default: {declared.shown_default})"
    low, high = bounds(name)
    limits = f" ({format_number(low)} to {format_number(high)})" if low is not None and declared.kind in (int, float) else ""
    return declared.declaration.help + limits


API_PARAMETERS = [name for name in inspect.signature(stylize).parameters if name != "request"]
STYLIZE_SUMMARY = stylize.__doc__


def document_api() -> None:
    """Complete stylize's docstring with its arguments' help on this server: Gradio reads it for the
    API's and the MCP tool's descriptions when the page wires stylize, so the page's build calls this first."""
    stylize.__doc__ = STYLIZE_SUMMARY + "\n    Args:\n" + "".join(f"        {name}: {api_help(name)}\n" for name in API_PARAMETERS)


def described(component: gr.components.Component, description: str, schema: dict | None = None) -> gr.components.Component:
    """`component`, hidden, as an API parameter that view_api() and MCP clients describe with
    `description`; `schema` replaces the component's JSON schema (gr.JSON's accepts anything, which
    MCP clients cannot check).

    Gradio takes a parameter's description only from its component's API info, and a subclass of a
    component would make Gradio write a .pyi file next to this one, so this component's methods are
    extended in place.
    """
    for method in ("api_info", "api_info_as_input"):
        original = getattr(component, method)
        setattr(component, method, lambda original=original: {**(schema or original()), "additional_description": description})
    component.visible = False
    return component


def api_input(name: str) -> gr.components.Component:
    """The API's input for a parameter: for a setting, its type, default, range or choices from its declaration."""
    if name in API_IMAGES:
        return described(gr.Image(type="filepath"), api_help(name))
    if name == "style_blend":
        return described(gr.JSON(value=None), api_help(name), NUMBERS_OR_NULL)
    declared = declaration(name)
    spec, default, help = declared.declaration, getattr(DEFAULTS, name), api_help(name)
    if name == "weights":
        return described(gr.Dropdown(choices=SERVER_WEIGHTS, value=default), help)
    if declared.kind is bool:
        return described(gr.Checkbox(value=default), help)
    if declared.kind is tuple and spec.choices:
        return described(gr.Dropdown(choices=list(spec.shown or spec.choices), value=list(default), multiselect=True), help)
    if declared.kind is tuple:
        return described(gr.JSON(value=default), help, NUMBERS_OR_NULL)
    if spec.choices:
        return described(gr.Dropdown(choices=list(spec.shown or spec.choices), value=default), help)
    low, high = bounds(name)
    return described(gr.Number(value=default, precision=0 if declared.kind is int else None, minimum=low, maximum=high), help)


# --- Restoring a result's settings ----------------------------------------------------------------------

# The page's controls that a result PNG sets, in the order restore_settings returns their values.
RESTORED = ["style_strength", "content_weight_log", "steps", "size", "style_layers", "content_layer", "optimizer", "init",
            "preserve_colors", "multiscale", "tv_weight", "style_scale", "pooling", "seed", "mask_feather", "second_style_share"]


def restore_settings(picture: str | None):
    """The page's controls (RESTORED, then the status line) set from a result PNG's settings."""
    if picture is None:
        return [gr.skip()] * (len(RESTORED) + 1)
    try:
        settings = settings_from_picture(picture)
    except ImageError as error:
        raise refuse(str(error)) from None
    values = {"style_strength": min(10.0, max(1.0, round(weight_to_strength(settings.style_weight), 1))),
              "content_weight_log": round(math.log10(max(settings.content_weight, 1e-3)), 1),
              **{name: getattr(settings, name) for name in RESTORED if hasattr(settings, name)}}
    values["style_layers"] = list(settings.style_layers)
    values["second_style_share"] = settings.style_blend[1] if len(settings.style_blend) == 2 else gr.skip()
    limits = capacity().limits
    narrowed = [name for name, limit in limits.items() if values[name] > limit]
    values |= {name: limits[name] for name in narrowed}
    note = f" ({', '.join(narrowed)} lowered to this server's limit)" if narrowed else ""
    return ([values[name] for name in RESTORED]
            + [f"Settings restored from {Path(picture).name}{note}; the images and any mask are yours to give again."])


# --- The gallery, the examples and the brush ------------------------------------------------------------

def style_picker(paintings: list[str]) -> Callable[[gr.SelectData], str]:
    """The gallery's select event: the painting clicked becomes the style. It goes by the index, since a
    path the browser sent would let a visitor name any file on the server."""

    def pick_style(selected: gr.SelectData) -> str:
        return paintings[selected.index]

    return pick_style


def example_masks() -> list[str]:
    """The brush layers of the examples, by name."""
    return sorted(path.stem for path in (EXAMPLES / "masks").glob("*.png"))


def canvas(photo: str | None, painted: str = ""):
    """The painting canvas over `photo`, and the mask: for an example with a brush layer
    (examples/masks/`painted`.png), the layer is the mask and shows in the canvas's photo. (Gradio's
    editor puts a layer given with its value off by half the picture, so none is given.)"""
    if photo is None:
        return None, None
    if not painted:
        return {"background": photo, "layers": [], "composite": None}, None
    if painted not in example_masks():  # a name, not a path: the event is reachable over HTTP
        raise refuse(f"unknown example mask; the examples have {', '.join(example_masks())}")
    layer = EXAMPLES / "masks" / f"{painted}.png"
    with Image.open(photo) as image, Image.open(layer) as brush:
        brush = brush.convert("RGBA").resize(image.size)
        brush.putalpha(brush.getchannel("A").point(lambda alpha: alpha * 3 // 5))  # the photo shows through, as under a stroke
        shown = Image.alpha_composite(image.convert("RGBA"), brush).convert("RGB")
    return {"background": shown, "layers": [], "composite": None}, str(layer)


def example_canvas(content, style, strength, size, painted):
    return canvas(content, painted)


def painted_mask(painting: dict | None) -> Image.Image | None:
    """What the brush has painted on the canvas (white), from the editor's value as the page sends it
    with Stylize; None where nothing is painted."""
    alphas = [uploaded(layer, "brush layer", _alpha) for layer in (painting or {}).get("layers") or []]
    if not alphas or max(alpha.getextrema()[1] for alpha in alphas) == 0:
        return None
    combined = alphas[0]
    for alpha in alphas[1:]:
        combined = ImageChops.lighter(combined, alpha)
    return combined.point(lambda value: 255 if value else 0)


def _alpha(path: str, what: str) -> Image.Image:
    try:
        with Image.open(path) as layer:
            return layer.convert("RGBA").getchannel("A")
    except (OSError, ValueError):
        raise refuse(f"{what}: not an image the canvas made") from None
