"""The Gradio app: live neural style transfer in the browser. Layout and wiring only; the work is in nst."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio.exceptions import InvalidPathError

import nst
from nst import ImageError, Settings, SettingsError, WeightsError, open_image, save_png, settings_from_picture
from nst.engine import warm_up
from nst.runtime import release_freed_memory, resolve_device, reuse_freed_memory
from nst.settings import check_number, declaration, format_number
from nst.timelapse import Timelapse

EXAMPLES = Path(__file__).resolve().parent / "examples"
ON_GPU = resolve_device("auto").type != "cpu"
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
   higher up.
4. The new picture starts as a copy of your photo. Each step measures how far it is from the photo's
   content and from the painting's Gram matrices, and nudges every pixel to shrink both.
5. **Style strength** trades the two off: the weight of the painting's statistics against the photo's
   arrangement. Fewer style layers, or only low ones, give finer texture.

It works coarse to fine: most steps run on a small version of the picture (fast), then on the full size.
Every result PNG carries its settings: drop one on "Restore settings" to make it again.
"""


def strength_to_weight(strength: float) -> float:
    return DEFAULTS.style_weight * STRENGTH_FACTOR ** (strength - DEFAULT_STRENGTH)


def weight_to_strength(weight: float) -> float:
    return DEFAULT_STRENGTH + math.log(max(weight, 1e-12) / DEFAULTS.style_weight, STRENGTH_FACTOR)


# --- Requests: what the browser or an API client sent -> images and Settings, or gr.Error -----------

ONLY_UPLOADS = "send an image file uploaded to this app (gradio_client's handle_file does that); URLs and paths on the server are refused"


def _refuse(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


def _image(payload, what: str):
    if payload is None:
        return None
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path:
        raise _refuse(f"{what}: {ONLY_UPLOADS}")
    if not Path(path).is_file():  # deleted from the upload cache; its path is the server's business
        raise _refuse(f"{what}: the uploaded file is no longer on the server (uploads are kept {CACHE_SECONDS // 60} minutes); "
                      "upload it again")
    return open_image(path, what)


class Blocks(gr.Blocks):
    """gr.Blocks whose refusal of a server path sent as a file says what to send instead.

    Gradio refuses such a path before the event's function runs, with an InvalidPathError that
    visitors see as a bare "Error" (its message names the path, so it is not shown as it is).
    """

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except InvalidPathError:
            raise _refuse(f"images: {ONLY_UPLOADS}") from None


def parse_request(content, style, second_style, **values):
    """The images and validated Settings of a request, or gr.Error naming what is allowed."""
    if content is None:
        raise _refuse("Add a content image (the photo to repaint).")
    if style is None:
        raise _refuse("Add a style image (the painting to borrow from).")
    if values.get("weights", DEFAULTS.weights) not in SERVER_WEIGHTS:
        raise _refuse(f"unknown weights {values['weights']!r}; choose one of {', '.join(SERVER_WEIGHTS)}")
    try:
        styles = [_image(style, "style image")] + ([_image(second_style, "second style image")] if second_style is not None else [])
        settings = Settings.from_values(style_count=len(styles), limits=LIMITS, **values)
        return _image(content, "content image"), styles, settings
    except (ImageError, SettingsError) as error:
        raise _refuse(str(error)) from None


# --- One run, shared by the page and the API ---------------------------------------------------------

class StopRequests:
    """Stop flags per session, which a run reads at each frame and ends on, keeping its picture.

    Cancelling the event instead left red "Error" badges over the outputs about one Stop in five,
    when the cancellation met a frame on its way. Stop sets every flag of its session: the running
    run's, and those of runs still waiting in the queue, armed when Stylize was clicked.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._waiting: dict[str, list[threading.Event]] = {}
        self._running: dict[str, list[threading.Event]] = {}

    def arm(self, session: str) -> None:
        with self._lock:
            self._waiting.setdefault(session, []).append(threading.Event())

    @contextlib.contextmanager
    def running(self, session: str) -> Iterator[threading.Event]:
        """The flag of a run starting now: the oldest armed one of its session, or a new one."""
        with self._lock:
            waiting = self._waiting.get(session)
            flag = waiting.pop(0) if waiting else threading.Event()
            self._running.setdefault(session, []).append(flag)
        try:
            yield flag
        finally:
            with self._lock:
                self._running[session].remove(flag)
                if not self._running[session]:
                    del self._running[session]

    def stop(self, session: str) -> None:
        with self._lock:
            for flag in self._waiting.get(session, []) + self._running.get(session, []):
                flag.set()

    def forget(self, session: str) -> None:
        with self._lock:
            self._waiting.pop(session, None)


stop_requests = StopRequests()


def status_line(frame, state: str | None = None) -> str:
    per_step = frame.elapsed / max(frame.step, 1)
    state = state or ("done" if frame.done else f"~{frame.seconds_left:.0f} s left")
    return (f"step {frame.step}/{frame.steps} · {frame.size[1]}×{frame.size[0]} px · {frame.elapsed:.1f} s · "
            f"{per_step:.2f} s/step · {state} · {frame.device} {frame.precision}")


def run_frames(content, styles, settings: Settings, session: str | None):
    """Yields (frame, status, finished) as the picture forms: finished on the last frame, also
    when the run stops early (Stop, the time limit, a NaN). Errors after the first frame end the
    run with a warning and the last picture; before it, they are refused with gr.Error."""
    frame = None
    try:
        with stop_requests.running(session or "") as stop:
            if stop.is_set():
                return
            frames = nst.stylize(content, styles, settings)
            for frame in frames:
                status, finished = status_line(frame), frame.done
                if frame.message:
                    gr.Warning(frame.message)
                    status = f"stopped: {frame.message}"
                elif not finished and stop.is_set():
                    frames.close()
                    status, finished = f"Stopped. {status_line(frame, 'stopped')}", True
                elif not finished and frame.elapsed > JOB_SECONDS:
                    frames.close()
                    status, finished = f"stopped at the time limit of {JOB_SECONDS} s per picture: {status_line(frame, 'stopped')}", True
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


class Results:
    """Where a run's files go: the final PNG (with its settings) and the timelapse. Gradio copies
    what a run returns into its own cache, which it cleans, so these are deleted with the run."""

    def __init__(self):
        self.folder = tempfile.TemporaryDirectory(prefix="nst-")
        self.timelapse = Timelapse()

    def picture(self, frame, settings: Settings) -> str:
        path = os.path.join(self.folder.name, "stylized.png")
        save_png(frame.image, path, settings)
        return path

    def animation(self, frame) -> str:
        self.timelapse.finish(frame.image)
        path = os.path.join(self.folder.name, "timelapse.webp")
        self.timelapse.save(path)
        return path


# --- The page's Stylize button ------------------------------------------------------------------------

def stylize_page(content, style, style_strength, content_weight_log, steps, size, style_layers, content_layer, optimizer, init,
                 preserve_colors, multiscale, tv_weight, style_scale, pooling, seed, weights, second_style, second_style_share,
                 request: gr.Request):
    """Streams (picture, loss plot, status, before/after, timelapse) to the page as the picture forms."""
    try:
        check_number("style strength", style_strength, 1, 10)
        check_number("content weight (log10)", content_weight_log, -3, math.log10(declaration("content_weight").declaration.high))
        check_number("share of the second style", second_style_share, 0, 1)
    except SettingsError as error:
        raise _refuse(str(error)) from None
    with_second = second_style is not None and second_style_share > 0
    content_image, styles, settings = parse_request(
        content, style, second_style if with_second else None, style_weight=strength_to_weight(style_strength),
        content_weight=10 ** content_weight_log, steps=steps, size=size, style_layers=style_layers, content_layer=content_layer,
        optimizer=optimizer, init=init, preserve_colors=preserve_colors, multiscale=multiscale, tv_weight=tv_weight,
        style_scale=style_scale, pooling=pooling, seed=seed, weights=weights,
        style_blend=(1 - second_style_share, second_style_share) if with_second else None)
    results, plot = Results(), LossPlot(settings.steps)
    with results.folder:
        started = False
        for frame, status, finished in run_frames(content_image, styles, settings, request.session_hash if request else None):
            started = True
            plot.add(frame)
            results.timelapse.add(frame.image)
            if not finished:
                yield frame.image, plot.figure(), status, gr.skip(), gr.skip()
                continue
            comparison = gr.ImageSlider(value=(content_image.resize(frame.image.size), frame.image), visible=True)
            yield results.picture(frame, settings), plot.figure(), status, comparison, gr.skip()
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.File(value=results.animation(frame), visible=True)
        if not started:
            yield gr.skip(), gr.skip(), "Stopped before it started.", gr.skip(), gr.skip()


class LossPlot:
    """The loss plot's rows: each term on a log10 axis, and a marked line where a finer scale starts."""

    def __init__(self, steps: int):
        self.steps, self.rows, self.scale = steps, [], None

    def add(self, frame) -> None:
        side = max(frame.size)
        if self.scale is not None and side != self.scale:
            low = min((row["log10 loss"] for row in self.rows), default=0)
            high = max((row["log10 loss"] for row in self.rows), default=1)
            label = f"→ {side} px"
            self.rows += [{"step": frame.step, "log10 loss": value, "series": label} for value in (low, high)]
        self.scale = side
        # a term at zero (the content term of the first step) has no place on a log axis
        self.rows += [{"step": frame.step, "log10 loss": math.log10(frame.losses[term]), "series": term}
                      for term in LOSS_TERMS if math.isfinite(frame.losses[term]) and frame.losses[term] > 0]

    def figure(self) -> gr.LinePlot:
        return gr.LinePlot(pd.DataFrame(self.rows), x_lim=[0, self.steps])


# --- The API: /stylize with the settings' names, and an MCP tool ---------------------------------------

def stylize(content: dict, style: dict, size: int = DEFAULTS.size, steps: int = DEFAULTS.steps,
            style_weight: float = DEFAULTS.style_weight, content_weight: float = DEFAULTS.content_weight,
            tv_weight: float = DEFAULTS.tv_weight, style_layers: list[str] = list(DEFAULTS.style_layers),  # noqa: B006
            style_layer_weights: list[float] | None = DEFAULTS.style_layer_weights, content_layer: str = DEFAULTS.content_layer,
            style_scale: float = DEFAULTS.style_scale, init: str = DEFAULTS.init,
            preserve_colors: str = DEFAULTS.preserve_colors, multiscale: bool = DEFAULTS.multiscale, pooling: str = DEFAULTS.pooling,
            optimizer: str = DEFAULTS.optimizer, seed: int = DEFAULTS.seed, weights: str = DEFAULTS.weights,
            second_style: dict | None = None, style_blend: list[float] | None = None, request: gr.Request = None):
    """Repaint a photo in the style of a painting (Gatys et al. neural style transfer with VGG19).

    Streams (picture, status, progress, timelapse) while the picture forms: the picture at the size
    of the result, a status line, the step, losses and estimated seconds left. The finished picture
    is a PNG that carries its settings; then the timelapse, an animated WebP of it forming, follows.

    Args:
        content: the photo whose arrangement is kept (an image file)
        style: the painting whose textures and colours are taken (an image file)
        size: long side of the result, in px
        steps: optimisation steps, over all scales
        style_weight: weight of the painting's textures: more paints more
        content_weight: weight of the photo's arrangement: more keeps more of the photo
        tv_weight: total variation weight: smooths noise
        style_layers: VGG19 layers whose Gram matrices carry the style
        style_layer_weights: one weight per style layer (default: equal)
        content_layer: VGG19 layer that carries the photo's arrangement
        style_scale: size of the style image relative to the result: larger, larger brush strokes
        init: the picture the optimisation starts from
        preserve_colors: luminance: transfer brightness only; histogram: recolour the painting first
        multiscale: optimise coarse to fine, most steps on small pictures (faster)
        pooling: VGG19's pooling
        optimizer: the optimiser of the pixels
        seed: random seed (for the noise start)
        weights: VGG19 weights: embedded (offline) or imagenet
        second_style: an optional second painting, blended with the first
        style_blend: with a second style, the weight of each style image (default: equal)
    """
    values = {name: value for name, value in locals().items() if name not in ("content", "style", "second_style", "request")}
    content_image, styles, settings = parse_request(content, style, second_style, **values)
    results = Results()
    with results.folder:
        for frame, status, finished in run_frames(content_image, styles, settings, request.session_hash if request else None):
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
    """The API's input for a setting: its type, default, range or choices and help from its declaration."""
    declared = declaration(name)
    spec, default, help = declared.declaration, getattr(DEFAULTS, name), declared.declaration.help
    if name == "weights":
        return described(gr.Dropdown(choices=SERVER_WEIGHTS, value=default), "VGG19 weights: embedded (offline) or imagenet (Hub)")
    if declared.kind is bool:
        return described(gr.Checkbox(value=default), help)
    if declared.kind is tuple and spec.choices:
        return described(gr.Dropdown(choices=list(spec.shown or spec.choices), value=list(default), multiselect=True), help)
    if declared.kind is tuple:
        return described(gr.JSON(value=default), help, NUMBERS_OR_NULL)
    if spec.choices:
        return described(gr.Dropdown(choices=list(spec.shown or spec.choices), value=default), help)
    low, high = bounds(name)
    number = gr.Number(value=default, precision=0 if declared.kind is int else None, minimum=low, maximum=high)
    return described(number, f"{help} ({format_number(low)} to {format_number(high)})")


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
    return [values[name] for name in RESTORED] + [f"Settings restored from {Path(picture).name}."]


def arm_stop(request: gr.Request) -> None:
    """Stylize was clicked: the run it queues can be stopped before it starts."""
    stop_requests.arm(request.session_hash)


def pick_style(selected: gr.SelectData) -> str:
    return str(EXAMPLES / GALLERY[selected.index][0])


def request_stop(request: gr.Request) -> None:
    """Stop this session's run at its next frame, or before it starts if it is still waiting."""
    stop_requests.stop(request.session_hash)


def forget_session(request: gr.Request) -> None:
    stop_requests.forget(request.session_hash)


def estimate_gpu_seconds(function):
    """ZeroGPU booking for calls of `function`: generous for the steps and size asked for."""
    signature = inspect.signature(function)

    def seconds(*args, **kwargs) -> int:
        try:
            arguments = signature.bind_partial(*args, **kwargs).arguments
            steps, size = float(arguments.get("steps", DEFAULTS.steps)), float(arguments.get("size", DEFAULTS.size))
            return int(min(300, 20 + steps * (size / 512) ** 2 * 0.02))
        except (TypeError, ValueError):
            return 60

    return seconds


def on_zero_gpu(function):
    try:
        import spaces
    except ImportError:
        return function
    if not getattr(getattr(spaces, "config", None), "Config", None) or not spaces.config.Config.zero_gpu:
        return function
    return spaces.GPU(duration=estimate_gpu_seconds(function))(function)


def example_rows() -> list[list]:
    pairs = [("chelsea", "starry_night", 5.0, 512), ("astronaut", "hubble_deep_field", 6.0, 512),
             ("rocket", "graf1", 5.0, 512), ("chelsea", "graf1", 4.0, 384), ("astronaut", "starry_night", 5.0, 512)]
    return [[str(EXAMPLES / f"{c}.jpg"), str(EXAMPLES / f"{s}.jpg"), strength, px] for c, s, strength, px in pairs]


def bounds(name: str) -> tuple[float, float]:
    """A setting's range, as declared and narrowed by this server's LIMITS."""
    spec = declaration(name).declaration
    return spec.low, LIMITS.get(name, spec.high)


def choices(name: str) -> list[str]:
    spec = declaration(name).declaration
    return list(spec.shown or spec.choices)


# The result fills its box from the first frame to the last, whatever the output size.
CSS = "#result img { width: 100%; height: 100%; object-fit: contain; }"

with Blocks(title="Neural Style Transfer", delete_cache=(max(1, CACHE_SECONDS // 3), CACHE_SECONDS)) as demo:
    gr.Markdown("# Neural Style Transfer\nDrop in a photo and a painting, press **Stylize**, and watch the photo "
                "take on the painting's style step by step.")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                content_image = gr.Image(label="Content (your photo)", type="filepath", sources=["upload", "clipboard", "webcam"],
                                         height=260)
                style_image = gr.Image(label="Style (a painting)", type="filepath", sources=["upload", "clipboard"], height=260)
            gallery = gr.Gallery([(str(EXAMPLES / path), caption) for path, caption in GALLERY], label="Or pick a painting",
                                 columns=len(GALLERY), rows=1, height=140, allow_preview=False, object_fit="cover", elem_id="gallery")
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
            result = gr.Image(label="Result", type="pil", format="png", interactive=False, buttons=["download", "fullscreen"],
                              height=420, elem_id="result")
            status = gr.Markdown("Ready.", elem_id="status")
            loss_plot = gr.LinePlot(x="step", y="log10 loss", color="series", label="Losses (log10)",
                                    color_title="", height=240, elem_id="loss-plot")
            comparison = gr.ImageSlider(label="Before / after", visible=False, type="pil", interactive=False)
            timelapse = gr.File(label="Timelapse (animated WebP)", visible=False, elem_id="timelapse")
    gr.Examples(example_rows(), inputs=[content_image, style_image, style_strength, size], cache_examples=False,
                label="Examples (click one, then Stylize)")
    with gr.Accordion("How it works", open=False):
        gr.Markdown(HOW_IT_WORKS)

    page_inputs = [content_image, style_image, style_strength, content_weight, steps, size, style_layers, content_layer, optimizer,
                   init, preserve_colors, multiscale, tv_weight, style_scale, pooling, seed, weights, second_style,
                   second_style_share]
    stylize_button.click(arm_stop, None, None, queue=False, api_visibility="private").then(
        on_zero_gpu(stylize_page), page_inputs, [result, loss_plot, status, comparison, timelapse], api_visibility="private",
        preprocess=False, concurrency_limit=CONCURRENCY, concurrency_id="stylize", show_progress="minimal")
    stop_button.click(request_stop, None, None, api_name="stop", api_visibility="undocumented", queue=False)
    gallery.select(pick_style, None, style_image, api_visibility="private")
    RESTORED = ["style_strength", "content_weight_log", "steps", "size", "style_layers", "content_layer", "optimizer", "init",
                "preserve_colors", "multiscale", "tv_weight", "style_scale", "pooling", "seed"]
    saved_picture.upload(restore_settings, saved_picture,
                         [style_strength, content_weight, steps, size, style_layers, content_layer, optimizer, init,
                          preserve_colors, multiscale, tv_weight, style_scale, pooling, seed, status], api_visibility="private")
    demo.unload(forget_session)

    # The API: hidden inputs named, typed and defaulted by the settings' declarations.
    api_parameters = [name for name in inspect.signature(stylize).parameters if name != "request"]
    api_inputs = [described(gr.Image(type="filepath"), "the photo whose arrangement is kept"),
                  described(gr.Image(type="filepath"), "the painting whose textures and colours are taken"),
                  *[api_input(name) for name in api_parameters[2:-2]],
                  described(gr.Image(type="filepath"), "an optional second painting, blended with the first"),
                  described(gr.JSON(value=None), "with a second style, the weight of each style image (default: equal)", NUMBERS_OR_NULL)]
    api_outputs = [gr.Image(type="filepath", format="png", visible=False, label="picture"),
                   gr.Textbox(visible=False, label="status"), gr.JSON(visible=False, label="progress"),
                   gr.File(visible=False, label="timelapse")]
    gr.Button(visible=False).click(on_zero_gpu(stylize), api_inputs, api_outputs, api_name="stylize", preprocess=False,
                                   concurrency_limit=CONCURRENCY, concurrency_id="stylize")

demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)


def prepare_server() -> None:
    """What a serving process does once before its first visitor: keep freed memory for the next step
    (process-wide, see reuse_freed_memory; each run gives its memory back at its end) and load the
    network, so that the first picture starts at full speed."""
    reuse_freed_memory()
    warm_up(DEFAULTS)


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
