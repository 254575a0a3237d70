"""The Gradio app: live neural style transfer in the browser. Layout and wiring only; the work is in nst."""

from __future__ import annotations

import argparse
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
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio import utils as gradio_utils
from gradio.exceptions import InvalidPathError
from gradio.route_utils import delete_files_created_by_app
from PIL import Image, ImageChops

import nst
from nst import ImageError, Settings, SettingsError, WeightsError, open_image, save_png, scale_schedule, settings_from_picture
from nst.images import open_mask
from nst.engine import warm_up
from nst.runtime import release_freed_memory, resolve_device, reuse_freed_memory
from nst.settings import check_number, declaration, format_number, shown_value
from nst.timelapse import Timelapse

EXAMPLES = Path(__file__).resolve().parent / "examples"
ON_GPU = resolve_device("auto").type != "cpu"


def _on_zero_gpu() -> bool:
    try:
        import spaces
    except ImportError:
        return False
    return bool(getattr(getattr(spaces, "config", None), "Config", None) and spaces.config.Config.zero_gpu)


ZERO_GPU = _on_zero_gpu()
# This server's policy on top of the settings' declarations: a shared CPU is slow, so smaller
# pictures, fewer steps and a time limit per picture (a run that takes longer stops and keeps its picture).
LIMITS = {"size": 2048 if ON_GPU else 1024, "steps": 2000 if ON_GPU else 1000}
JOB_SECONDS = 600 if ON_GPU else 300
MAX_FILE_SIZE = "10mb"
QUEUE_SIZE = 8
# Uploads and results are deleted this many seconds after they were made (checked every third of it).
CACHE_SECONDS = int(os.environ.get("NST_CACHE_SECONDS", "1800"))
CONCURRENCY = 1  # one optimisation at a time: two would share the same cores and both run slower
WEIGHT_CHOICES = [("Embedded VGG19 (Caffe, offline)", "embedded"),
                  ("ImageNet VGG19 from the Hugging Face Hub (downloads ~575 MB on first use)", "imagenet")]
SERVER_WEIGHTS = [value for _, value in WEIGHT_CHOICES]  # never a path: a visitor must not make the server read its files
DEFAULTS = Settings()
# "Style strength" s, from 1 (a light touch) to 10 (fully painted), is the style weight on a log scale:
# DEFAULTS.style_weight at DEFAULT_STRENGTH, STRENGTH_FACTOR times more for each step up.
DEFAULT_STRENGTH = 5.0
STRENGTH_FACTOR = 2.0
LOSS_TERMS = ("content", "style", "total")
# Public-domain paintings from five periods, one click each as the style (credits in examples/CREDITS.md).
GALLERY = [("panel/codex_initial.jpg", "Codex Aboensis, 15th c."), ("starry_night.jpg", "Van Gogh, 1889"),
           ("panel/munch_scream.jpg", "Munch, 1893"), ("panel/simberg_angel.jpg", "Simberg, 1903"),
           ("panel/klimt_kiss.jpg", "Klimt, 1907–08")]

HOW_IT_WORKS = """
**What happens when you press Stylize** (Gatys, Ecker & Bethge, 2015)

1. A VGG19 network, trained to recognise objects in photos, looks at both pictures. It is frozen:
   nothing in it learns. Only the pixels of the new picture change.
2. **Content** is read at one deep layer (`relu4_2`): there the network knows *what is where* —
   the cat's eyes, the rocket's outline — but no longer the exact colours or brush marks.
3. **Style** is read at several layers (`relu1_1` … `relu5_1`). At each, the **Gram matrix** records
   which of the network's feature detectors fire *together*, wherever they are in the picture. That
   throws away the arrangement and keeps texture: colours and strokes at the low layers, larger motifs
   higher up. `relu4_1` has the most say and `relu5_1` very little, since the deepest layer would
   carry the painting's own objects (eyes, faces, discs) into your photo.
4. The new picture starts as a copy of your photo. Each step measures how far it is from the photo's
   content and from the painting's Gram matrices, and nudges every pixel to shrink both.
5. **Style strength** trades the two off: the weight of the painting's statistics against the photo's
   arrangement. A bold painting on a plain photo is pressed a little harder than a pale one on a
   busy photo, so that the same strength looks alike across pairs. Fewer style layers, or only low
   ones, give finer texture.

It works coarse to fine: most steps run on a small version of the picture (fast), then on the full size.
Every result PNG carries its settings: drop one on "Restore settings" (under Advanced) to set them again.
"""


def strength_to_weight(strength: float) -> float:
    return DEFAULTS.style_weight * STRENGTH_FACTOR ** (strength - DEFAULT_STRENGTH)


def weight_to_strength(weight: float) -> float:
    return DEFAULT_STRENGTH + math.log(max(weight, 1e-12) / DEFAULTS.style_weight, STRENGTH_FACTOR)


def bounds(name: str) -> tuple[float, float]:
    """A setting's range, as declared and narrowed by this server's LIMITS."""
    spec = declaration(name).declaration
    return spec.low, LIMITS.get(name, spec.high)


def choices(name: str) -> list[str]:
    spec = declaration(name).declaration
    return list(spec.shown or spec.choices)


# --- Requests: what the browser or an API client sent -> images and Settings, or gr.Error -----------

ONLY_UPLOADS = ("send an image file uploaded to this app (gradio_client's handle_file does that) or the http(s) address of a "
                "public one; paths on the server are refused")
NOT_FETCHED = ("could not fetch an image from its address (only public http(s) addresses are fetched); upload the file instead "
               "(gradio_client's handle_file does that)")
WRONG_KIND = ("a value of the wrong kind: send images as files uploaded to this app (gradio_client's handle_file does that), "
              "and settings as client.view_api() lists them")


def _refuse(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


def _image(payload, what: str, decode=open_image):
    if payload is None:
        return None
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path:
        raise _refuse(f"{what}: {ONLY_UPLOADS}")
    if not Path(path).is_file():  # deleted from the upload cache; its path is the server's business
        raise _refuse(f"{what}: the uploaded file is no longer on the server (uploads are kept {CACHE_SECONDS // 60} minutes); "
                      "upload it again")
    return decode(path, what)


def _files(value) -> Iterator[dict]:
    """The file payloads in a request's value: dicts with a path or a URL, also inside an editor's
    value ({"background": ..., "layers": [...]}) and in lists."""
    if isinstance(value, dict):
        if "path" in value or "url" in value:
            yield value
        else:
            for item in value.values():
                yield from _files(item)
    elif isinstance(value, list):
        for item in value:
            yield from _files(item)


def _is_address(path) -> bool:
    return isinstance(path, str) and path.startswith(("http://", "https://"))


def _taken(payload: dict) -> bool:
    """Whether the app takes a file payload: a file in Gradio's upload folder, where uploads, examples
    and the app's own outputs lie, or one marked as a file at an http(s) address, which Gradio
    fetches into that folder if its host is public (as MCP clients send images)."""
    path = payload.get("path")
    if _is_address(path):
        meta = payload.get("meta")
        return isinstance(meta, dict) and meta.get("_type") == "gradio.FileData"
    if not isinstance(path, str) or not path:
        return False
    try:
        return Path(path).resolve().is_relative_to(Path(gradio_utils.get_upload_folder()).resolve())
    except (OSError, ValueError):  # a NUL byte, a loop of links
        return False


class Blocks(gr.Blocks):
    """gr.Blocks that takes files only from its upload folder or from public addresses (`_taken`),
    and refuses anything else a request sends in place of a file with a line that says what to send.

    Gradio checks the path of a file only when its payload is marked as one ("meta"): without the
    mark, a path on the server reached the events, which read the file and sent it back as a picture
    (or said whether it existed). Values of the wrong kind, and addresses Gradio would not fetch, came
    back as a bare "Error" (their messages name paths and hosts, so they are not shown as they are).
    """

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        files = list(_files(inputs))
        if not explicit_call and not all(_taken(payload) for payload in files):
            raise _refuse(f"images: {ONLY_UPLOADS}")
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:  # a ValueError too, with its own message
            raise
        except InvalidPathError:
            raise _refuse(f"images: {ONLY_UPLOADS}") from None
        except ValueError:  # a host Gradio refuses or cannot reach; pydantic's validation: a value of the wrong kind
            raise _refuse(NOT_FETCHED if any(_is_address(payload.get("path")) for payload in files) else WRONG_KIND) from None


def parse_request(content, style, second_style, mask=None, **values):
    """The images, validated Settings and mask (or None) of a request, or gr.Error naming what is allowed."""
    if content is None:
        raise _refuse("Add a content image (the photo to repaint).")
    if style is None:
        raise _refuse("Add a style image (the painting to borrow from).")
    if values.get("weights", DEFAULTS.weights) not in SERVER_WEIGHTS:
        raise _refuse(f"unknown weights {shown_value(values['weights'])}; choose one of {', '.join(SERVER_WEIGHTS)}")
    try:
        styles = [_image(style, "style image")] + ([_image(second_style, "second style image")] if second_style is not None else [])
        settings = Settings.from_values(style_count=len(styles), limits=LIMITS, **values)
        return _image(content, "content image"), styles, settings, _image(mask, "mask", open_mask)
    except (ImageError, SettingsError) as error:
        raise _refuse(str(error)) from None


# --- One run, shared by the page and the API ---------------------------------------------------------

class StopRequests:
    """Stop flags, one per run, which the run reads at each frame and ends on, keeping its picture.

    Cancelling the event instead left red "Error" badges over the outputs about one Stop in five,
    when the cancellation met a frame on its way. A click on Stylize arms its run's flag at once,
    before the queue, so Stop reaches runs still waiting too; Stop sets every flag of its session.
    A flag is a file, so that a run in another process (ZeroGPU forks one per call) sees it.
    """

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="nst-stops-"))
        self._lock = threading.Lock()
        self._sessions: dict[str, set[str]] = {}

    def arm(self, session: str) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._sessions.setdefault(session, set()).add(token)
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


def status_line(frame, state: str | None = None) -> str:
    per_step = frame.elapsed / max(frame.step, 1)
    state = state or ("done" if frame.done else f"~{frame.seconds_left:.0f} s left")
    return (f"step {frame.step}/{frame.steps} · {frame.size[1]}×{frame.size[0]} px · {frame.elapsed:.1f} s · "
            f"{per_step:.2f} s/step · {state} · {frame.device} {frame.precision}")


def gpu_seconds(settings: Settings) -> int:
    """ZeroGPU booking for a run: generous for the steps and size asked for, within ZeroGPU's 300 s."""
    return int(min(300, 20 + settings.steps * (settings.size / 512) ** 2 * 0.02))


def run_frames(content, styles, settings: Settings, mask, token: str):
    """Yields (frame, status, finished) as the picture forms: finished on the last frame, also
    when the run stops early (Stop, the time limit, a NaN). Errors after the first frame end the
    run with a warning and the last picture; before it, they are refused with gr.Error. On ZeroGPU
    this runs in a process of its own (see on_zero_gpu)."""
    time_limit = min(JOB_SECONDS, gpu_seconds(settings) - 15) if ZERO_GPU else JOB_SECONDS
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
            elif not finished and frame.elapsed > time_limit:
                frames.close()
                status, finished = f"stopped at the time limit of {time_limit} s per picture: {status_line(frame, 'stopped')}", True
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
        raise _refuse(message)
    gr.Warning(message)  # keep the last good picture on screen instead of an error badge
    yield frame, f"stopped: {message}", True


def on_zero_gpu(function):
    """`function` on a ZeroGPU Space's GPU, booked for `gpu_seconds` of its settings; elsewhere as it is."""
    if not ZERO_GPU:
        return function
    import spaces

    return spaces.GPU(duration=lambda content, styles, settings, *rest: gpu_seconds(settings))(function)


frames_on_device = on_zero_gpu(run_frames)


class Results:
    """Where a run's files go: the final PNG (with its settings) and the timelapse. Gradio copies
    what a run returns into its own cache, which it cleans; these folders go when they are older
    than the cache's files (checked at each run's start)."""

    root = Path(tempfile.gettempdir()) / f"nst-results-{os.getpid()}"

    def __init__(self):
        self.root.mkdir(exist_ok=True)
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
        raise _refuse(str(error)) from None
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
stylize.__doc__ += "\n    Args:\n" + "".join(f"        {name}: {api_help(name)}\n" for name in API_PARAMETERS)


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

def restore_settings(picture: str | None):
    """The page's controls set from a result PNG's settings."""
    if picture is None:
        return [gr.skip()] * (len(RESTORED) + 1)
    try:
        settings = settings_from_picture(picture)
    except ImageError as error:
        raise _refuse(str(error)) from None
    values = {"style_strength": min(10.0, max(1.0, round(weight_to_strength(settings.style_weight), 1))),
              "content_weight_log": round(math.log10(max(settings.content_weight, 1e-3)), 1),
              **{name: getattr(settings, name) for name in RESTORED if hasattr(settings, name)}}
    values["style_layers"] = list(settings.style_layers)
    values["second_style_share"] = settings.style_blend[1] if len(settings.style_blend) == 2 else gr.skip()
    narrowed = [name for name, limit in LIMITS.items() if values[name] > limit]
    values |= {name: LIMITS[name] for name in narrowed}
    note = f" ({', '.join(narrowed)} lowered to this server's limit)" if narrowed else ""
    return ([values[name] for name in RESTORED]
            + [f"Settings restored from {Path(picture).name}{note}; the images and any mask are yours to give again."])


def arm_stop(request: gr.Request) -> str:
    """Stylize was clicked: the run it queues can be stopped before it starts. Its token goes with it."""
    return stop_requests.arm(request.session_hash)


def pick_style(selected: gr.SelectData) -> str:
    return str(EXAMPLES / GALLERY[selected.index][0])


def request_stop(request: gr.Request) -> None:
    """Stop this session's run at its next frame, or before it starts if it is still waiting."""
    stop_requests.stop(request.session_hash)


def forget_session(request: gr.Request) -> None:
    stop_requests.forget(request.session_hash)


def example_rows() -> list[list]:
    """content, style, style strength, size, and what the brush has painted over the content."""
    pairs = [("chelsea", "starry_night", 5.0, 512, None), ("astronaut", "hubble_deep_field", 6.0, 512, None),
             ("rocket", "starry_night", 5.0, 512, "rocket_sky"), ("rocket", "graf1", 5.0, 512, None),
             ("chelsea", "graf1", 4.0, 384, None), ("astronaut", "starry_night", 5.0, 512, None)]
    return [[str(EXAMPLES / f"{c}.jpg"), str(EXAMPLES / f"{s}.jpg"), strength, px, painted or ""] for c, s, strength, px, painted in pairs]


EXAMPLE_MASKS = {path.stem for path in (EXAMPLES / "masks").glob("*.png")}


def canvas(photo: str | None, painted: str = ""):
    """The painting canvas over `photo`, and the mask: for an example with a brush layer
    (examples/masks/`painted`.png), the layer is the mask and shows in the canvas's photo. (Gradio
    6.31's editor puts a layer given with its value off by half the picture, so none is given.)"""
    if photo is None:
        return None, None
    if not painted:
        return {"background": photo, "layers": [], "composite": None}, None
    if painted not in EXAMPLE_MASKS:  # a name, not a path: the event is reachable over HTTP
        raise _refuse(f"unknown example mask; the examples have {', '.join(sorted(EXAMPLE_MASKS))}")
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
    alphas = [_image(layer, "brush layer", _alpha) for layer in (painting or {}).get("layers") or []]
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
        raise _refuse(f"{what}: not an image the canvas made") from None


# The result fills its box from the first frame to the last, whatever the output size.
CSS = ("#result img { width: 100%; height: 100%; object-fit: contain; }"
       " #loss-plot { display: flex; flex-direction: column; } #loss-plot > .vega-embed { flex: 1 1 0; min-height: 0; }")

with Blocks(title="Neural Style Transfer", delete_cache=(max(1, CACHE_SECONDS // 3), CACHE_SECONDS)) as demo:
    gr.Markdown("# Neural Style Transfer\nDrop in a photo and a painting, press **Stylize**, and watch the photo "
                "take on the painting's style step by step.")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                content_image = gr.Image(label="Content (your photo)", type="filepath", sources=["upload", "clipboard", "webcam"],
                                         height=260, elem_id="content")
                style_image = gr.Image(label="Style (a painting)", type="filepath", sources=["upload", "clipboard"], height=260,
                                       elem_id="style")
            gallery = gr.Gallery([(str(EXAMPLES / path), caption) for path, caption in GALLERY], label="Or pick a painting",
                                 columns=len(GALLERY), rows=1, height=140, allow_preview=False, object_fit="cover", elem_id="gallery")
            with gr.Accordion("Paint where the style goes (optional)", open=True, elem_id="paint-section"):
                painting = gr.ImageEditor(label="Brush over your photo", type="pil", sources=(), transforms=(), layers=False,
                                          brush=gr.Brush(colors=[("#ff2d87", 0.6)], color_mode="fixed"), eraser=gr.Eraser(),
                                          height=320, elem_id="painting")
                mask_feather = gr.Slider(*bounds("mask_feather"), value=DEFAULTS.mask_feather, step=1, label="Feather (px)",
                                         info="Softens the edge between painted and unpainted parts. Unpainted parts stay the photo, "
                                              "or take the second style (Advanced). On an example, the painted part shows in pink; "
                                              "brushing starts a new mask.")
                mask = gr.Image(type="filepath", format="png", image_mode="L", visible=False, elem_id="mask")
                painted_example = gr.Textbox(visible=False)  # an example's brush layer, by name
            style_strength = gr.Slider(1, 10, value=DEFAULT_STRENGTH, step=0.5, label="Style strength", elem_id="strength",
                                       info="1: a light touch of the painting · 10: fully painted")
            with gr.Row():
                steps = gr.Slider(*bounds("steps"), value=DEFAULTS.steps, step=1, label="Iterations", elem_id="steps")
                size = gr.Slider(*bounds("size"), value=DEFAULTS.size, step=32, label="Output size (long side, px)", elem_id="size")
            style_layers = gr.CheckboxGroup(choices("style_layers"), value=list(DEFAULTS.style_layers), label="Style layers",
                                            info="Low layers: colour and fine texture. High layers: larger motifs.")
            content_layer = gr.Dropdown(choices("content_layer"), value=DEFAULTS.content_layer, label="Content layer")
            with gr.Accordion("Advanced", open=False):
                content_weight = gr.Slider(-3, math.log10(bounds("content_weight")[1]), value=math.log10(DEFAULTS.content_weight),
                                           step=0.1, label="Content weight (log10)", info="More: more photo. 0 = weight 1.")
                with gr.Row():
                    optimizer = gr.Radio(choices("optimizer"), value=DEFAULTS.optimizer, label="Optimiser")
                    init = gr.Radio(choices("init"), value=DEFAULTS.init, label="Start from")
                    preserve_colors = gr.Radio(choices("preserve_colors"), value=DEFAULTS.preserve_colors, label="Preserve colours",
                                               info="luminance: style on brightness only; histogram: recolour the painting first")
                with gr.Row():
                    multiscale = gr.Checkbox(value=DEFAULTS.multiscale, label="Coarse to fine (faster)")
                    pooling = gr.Radio(choices("pooling"), value=DEFAULTS.pooling, label="Pooling")
                    seed = gr.Number(value=DEFAULTS.seed, precision=0, minimum=bounds("seed")[0], maximum=bounds("seed")[1], label="Seed")
                with gr.Row():
                    tv_weight = gr.Slider(*bounds("tv_weight"), value=DEFAULTS.tv_weight, step=0.5, label="Smoothness (TV weight)")
                    style_scale = gr.Slider(*bounds("style_scale"), value=DEFAULTS.style_scale, step=0.05, label="Style scale",
                                            info="Size of the painting's brush strokes relative to the output")
                weights = gr.Dropdown(WEIGHT_CHOICES, value=DEFAULTS.weights, label="VGG19 weights")
                with gr.Row():
                    second_style = gr.Image(label="Second style (optional)", type="filepath", sources=["upload", "clipboard"], height=180)
                    second_style_share = gr.Slider(0, 1, value=0.5, step=0.05, label="Share of the second style")
                saved_picture = gr.File(label="Restore settings: drop a result PNG here", file_types=[".png"], type="filepath",
                                        height=100, elem_id="restore")
            with gr.Row():
                stylize_button = gr.Button("Stylize", variant="primary")
                stop_button = gr.Button("Stop", variant="stop")
        with gr.Column():
            # Frames in the making go out as JPEG: a 512 px PNG took 40-80 ms of the server's time and 240 KB
            # each; the finished picture is a PNG file, with its settings, that no format here touches.
            result = gr.Image(label="Result", type="pil", format="jpeg", interactive=False, buttons=["download", "fullscreen"],
                              height=420, elem_id="result")
            status = gr.Markdown("Ready.", elem_id="status")
            loss_plot = gr.LinePlot(x="step", y="log10 loss", color="series", label="Losses (log10)",
                                    color_title="", height=270, elem_id="loss-plot")
            comparison = gr.ImageSlider(label="Before / after", visible=False, type="pil", interactive=False)
            timelapse = gr.File(label="Timelapse (animated WebP)", visible=False, elem_id="timelapse")
    gr.Examples(example_rows(), inputs=[content_image, style_image, style_strength, size, painted_example], cache_examples=False,
                fn=example_canvas, outputs=[painting, mask], run_on_click=True, label="Examples (click one, then Stylize)")
    with gr.Accordion("How it works", open=False):
        gr.Markdown(HOW_IT_WORKS)

    page_inputs = [content_image, style_image, style_strength, content_weight, steps, size, style_layers, content_layer, optimizer,
                   init, preserve_colors, multiscale, tv_weight, style_scale, pooling, seed, weights, second_style,
                   second_style_share, painting, mask, mask_feather]
    content_image.input(canvas, content_image, [painting, mask], queue=False, api_visibility="private")  # a new photo: a clean canvas
    painting.clear(lambda: None, None, mask, queue=False, api_visibility="private")
    run_token = gr.State()  # the stop flag of the run a click queues
    stylize_button.click(arm_stop, None, run_token, queue=False, api_visibility="private").then(
        stylize_page, [*page_inputs, run_token], [result, loss_plot, status, comparison, timelapse], api_visibility="private",
        preprocess=False, concurrency_limit=CONCURRENCY, concurrency_id="stylize", show_progress="minimal")
    stop_button.click(request_stop, None, None, api_name="stop", api_visibility="undocumented", queue=False)
    gallery.select(pick_style, None, style_image, api_visibility="private")
    RESTORED = ["style_strength", "content_weight_log", "steps", "size", "style_layers", "content_layer", "optimizer", "init",
                "preserve_colors", "multiscale", "tv_weight", "style_scale", "pooling", "seed", "mask_feather", "second_style_share"]
    saved_picture.upload(restore_settings, saved_picture,
                         [style_strength, content_weight, steps, size, style_layers, content_layer, optimizer, init,
                          preserve_colors, multiscale, tv_weight, style_scale, pooling, seed, mask_feather, second_style_share, status],
                         api_visibility="private")
    demo.unload(forget_session)

    # The API: hidden inputs named, typed and defaulted by the settings' declarations.
    api_inputs = [api_input(name) for name in API_PARAMETERS]
    api_outputs = [gr.Image(type="filepath", format="jpeg", visible=False, label="picture"),  # see the Result box
                   gr.Textbox(visible=False, label="status"), gr.JSON(visible=False, label="progress"),
                   gr.File(visible=False, label="timelapse")]
    gr.Button(visible=False).click(stylize, api_inputs, api_outputs, api_name="stylize", preprocess=False,
                                   concurrency_limit=CONCURRENCY, concurrency_id="stylize")

demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)


def sweep_cache(every: float, age: float) -> None:
    """Deletes the app's cached files older than `age` seconds, every `every` seconds, whatever happens.
    Gradio 6.31's own sweep (delete_cache) walks the app's sets of files while a running job may add
    to them, and any error there ends its task for good. In CI, 46 files were still there 4 s after
    the last of 24 jobs with a 3 s age, as if it had ended; this one logs the error and goes on."""
    while True:
        time.sleep(every)
        try:
            delete_files_created_by_app(demo, age)
        except Exception:  # the next sweep gets what this one missed
            logging.getLogger(__name__).exception("cache sweep failed; retrying in %s s", every)


def prepare_server() -> None:
    """What a serving process does once before its first visitor: keep freed memory for the next step
    (process-wide, see reuse_freed_memory; each run gives its memory back at its end), load the
    network and time a few small steps (warm_up), so that the first picture starts at full speed
    and its first frames foresee the time left, and sweep the cache."""
    reuse_freed_memory()
    warm_up(DEFAULTS)
    threading.Thread(target=sweep_cache, args=demo.delete_cache, daemon=True, name="sweep-cache").start()


def launch(**options):
    """Serve the app as it is meant to be served: its style, the upload cap, errors without their
    internals, and the API as an MCP server too (at /gradio_api/mcp/)."""
    return demo.launch(css=CSS, max_file_size=MAX_FILE_SIZE, show_error=False, mcp_server=True, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the style transfer app.")
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a temporary public share link")
    args = parser.parse_args()
    prepare_server()
    launch(share=args.share, server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))


if __name__ == "__main__":
    main()
