"""The Gradio app: live neural style transfer in the browser. Layout and wiring only; the work is in nst."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio.exceptions import InvalidPathError

from nst import ImageError, Settings, SettingsError, WeightsError, open_image, stylize
from nst.engine import warm_up
from nst.runtime import release_freed_memory, resolve_device, reuse_freed_memory
from nst.settings import check_number, declaration

EXAMPLES = Path(__file__).resolve().parent / "examples"
ON_GPU = resolve_device("auto").type != "cpu"
# This server's policy on top of the settings' declarations: a shared CPU is slow, so smaller
# pictures, fewer steps and a time limit per picture (a job that runs longer stops and keeps its picture).
LIMITS = {"size": 2048 if ON_GPU else 1024, "steps": 2000 if ON_GPU else 1000}
JOB_SECONDS = 600 if ON_GPU else 300
MAX_FILE_SIZE = "10mb"
QUEUE_SIZE = 8
# Uploads and results are deleted this many seconds after they were made (checked every third of it).
CACHE_SECONDS = int(os.environ.get("NST_CACHE_SECONDS", "1800"))
CONCURRENCY = 1  # one optimisation at a time: two would share the same cores and both run slower
WEIGHT_CHOICES = [("Embedded VGG19 (Caffe, offline)", "embedded"),
                  ("ImageNet VGG19 from the Hugging Face Hub (downloads ~575 MB on first use)", "imagenet")]
SERVER_WEIGHTS = [value for _, value in WEIGHT_CHOICES]
DEFAULTS = Settings()

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
5. **Content weight vs style weight** trade the two off: more style weight, more painting; more content
   weight, more photo. Fewer style layers, or only low ones, give finer texture.

It works coarse to fine: most steps run on a small version of the picture (fast), then on the full size.
"""



def bounds(name: str) -> tuple[float, float]:
    """A setting's range, as declared and narrowed by this server's LIMITS."""
    declared = declaration(name).declaration
    return declared.low, LIMITS.get(name, declared.high)


def choices(name: str) -> list[str]:
    declared = declaration(name).declaration
    return list(declared.shown or declared.choices)


def log_slider(name: str, low: int, info: str) -> gr.Slider:
    """A slider over log10 of a weight, from 10^low to the declared highest weight."""
    high = math.log10(declaration(name).declaration.high)
    return gr.Slider(low, high, value=math.log10(getattr(DEFAULTS, name)), step=0.1, label=f"{name.replace('_', ' ').capitalize()} (log10)",
                     info=info)


def _from_log(name: str, value, low: int) -> float:
    label = f"{name.replace('_', ' ')} (log10)"
    check_number(label, value, low, math.log10(declaration(name).declaration.high))
    return 10 ** float(value)


ONLY_UPLOADS = "send an image file uploaded to this app (gradio_client's handle_file does that); URLs and paths on the server are refused"


def _image(payload, what: str):
    if payload is None:
        return None
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path:
        raise gr.Error(f"{what}: {ONLY_UPLOADS}", print_exception=False)
    if not Path(path).is_file():  # deleted from the upload cache; its path is the server's business
        raise gr.Error(f"{what}: the uploaded file is no longer on the server (uploads are kept {CACHE_SECONDS // 60} minutes); "
                       "upload it again", print_exception=False)
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
            raise gr.Error(f"images: {ONLY_UPLOADS}", print_exception=False) from None


def parse_request(content, style, content_weight_log, style_weight_log, steps, size, style_layers, content_layer,
                  optimizer, init, preserve_colors, multiscale, tv_weight, style_scale, pooling, seed, weights,
                  second_style, second_style_blend):
    """Raw event values (as the browser or an API client sent them) -> images and Settings, or gr.Error."""
    if content is None:
        raise gr.Error("Add a content image (the photo to repaint).", print_exception=False)
    if style is None:
        raise gr.Error("Add a style image (the painting to borrow from).", print_exception=False)
    # The server's weights only: a path would let a visitor make the server read its files.
    if weights not in SERVER_WEIGHTS:
        raise gr.Error(f"unknown weights {weights!r}; choose one of {', '.join(SERVER_WEIGHTS)}", print_exception=False)
    try:
        check_number("share of the second style", second_style_blend, 0, 1)
        styles = [_image(style, "style image")]
        blend = None
        if second_style is not None and second_style_blend > 0:
            styles.append(_image(second_style, "second style image"))
            blend = (1 - second_style_blend, second_style_blend)
        settings = Settings.from_values(
            style_count=len(styles), limits=LIMITS, content_weight=_from_log("content_weight", content_weight_log, -3),
            style_weight=_from_log("style_weight", style_weight_log, -2), steps=steps, size=size, style_layers=style_layers,
            content_layer=content_layer, optimizer=optimizer, init=init, preserve_colors=preserve_colors, multiscale=multiscale,
            tv_weight=tv_weight, style_scale=style_scale, pooling=pooling, seed=seed, weights=weights, style_blend=blend)
        return _image(content, "content image"), styles, settings
    except (ImageError, SettingsError) as error:
        raise gr.Error(str(error), print_exception=False) from None


def status_line(frame, state: str | None = None) -> str:
    per_step = frame.elapsed / max(frame.step, 1)
    state = state or ("done" if frame.done else f"~{frame.seconds_left:.0f} s left")
    return (f"step {frame.step}/{frame.steps} · {frame.size[1]}×{frame.size[0]} px · {frame.elapsed:.1f} s · "
            f"{per_step:.2f} s/step · {state} · {frame.device} {frame.precision}")


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


def arm_stop(request: gr.Request) -> None:
    """Stylize was clicked: the run it queues can be stopped before it starts."""
    stop_requests.arm(request.session_hash)


def request_stop(request: gr.Request) -> None:
    """Stop this session's run at its next frame, or before it starts if it is still waiting."""
    stop_requests.stop(request.session_hash)


def forget_session(request: gr.Request) -> None:
    stop_requests.forget(request.session_hash)


def run(content, style, content_weight_log, style_weight_log, steps, size, style_layers, content_layer, optimizer, init,
        preserve_colors, multiscale, tv_weight, style_scale, pooling, seed, weights, second_style, second_style_blend,
        request: gr.Request):
    """The /stylize endpoint: streams (picture, loss plot, status, before/after) as the picture forms."""
    try:
        with stop_requests.running(request.session_hash) as stop:
            yield from _run(parse_request(content, style, content_weight_log, style_weight_log, steps, size, style_layers,
                                          content_layer, optimizer, init, preserve_colors, multiscale, tv_weight, style_scale,
                                          pooling, seed, weights, second_style, second_style_blend), stop)
    finally:  # finished, failed or cancelled: an idle server gives its working memory back
        release_freed_memory()


def _run(request, stop: threading.Event):
    content, styles, settings = request
    if stop.is_set():
        yield gr.skip(), gr.skip(), "Stopped before it started.", gr.skip()
        return
    rows: list[dict] = []
    picture = None
    frames = stylize(content, styles, replace(settings, frame_interval=0.5))
    try:
        for frame in frames:
            picture = frame.image
            rows += [{"step": frame.step, "loss": frame.losses[term], "term": term} for term in ("content", "style", "total")]
            status, done = status_line(frame), frame.done
            if frame.message:
                gr.Warning(frame.message)
                status = f"stopped: {frame.message}"
            elif not done and stop.is_set():
                frames.close()
                status, done = f"Stopped. {status_line(frame, 'stopped')}", True
            elif not done and frame.elapsed > JOB_SECONDS:
                frames.close()
                status, done = f"stopped at the time limit of {JOB_SECONDS} s per picture: {status}", True
            comparison = gr.ImageSlider(value=(content.resize(picture.size), picture), visible=True) if done else gr.skip()
            yield picture, pd.DataFrame(rows), status, comparison
            if done:
                return
    except (ImageError, SettingsError, WeightsError) as error:
        message = str(error)
    except Exception as error:  # out of memory and the like: say what, log where, keep serving
        logging.exception("stylize failed")
        message = f"the run failed ({type(error).__name__}); try a smaller size or fewer style layers"
    else:
        return
    if picture is None:
        raise gr.Error(message, print_exception=False)
    gr.Warning(message)  # keep the last good picture on screen instead of an error badge
    yield picture, pd.DataFrame(rows), f"stopped: {message}", gr.skip()


def estimate_gpu_seconds(*values) -> int:
    """ZeroGPU booking: generous for the steps and size asked for, within ZeroGPU's limits."""
    try:
        steps, size = float(values[4]), float(values[5])
        return int(min(300, 20 + steps * (size / 512) ** 2 * 0.02))
    except (TypeError, ValueError, IndexError):
        return 60


def on_zero_gpu(function):
    try:
        import spaces
    except ImportError:
        return function
    if not getattr(getattr(spaces, "config", None), "Config", None) or not spaces.config.Config.zero_gpu:
        return function
    return spaces.GPU(duration=estimate_gpu_seconds)(function)


stylize_endpoint = on_zero_gpu(run)


def example_rows() -> list[list]:
    steps = DEFAULTS.steps
    pairs = [("chelsea", "starry_night", 1.0, steps, 512), ("astronaut", "hubble_deep_field", 1.3, steps, 512),
             ("rocket", "graf1", 1.0, steps, 512), ("chelsea", "graf1", 0.7, 100, 384),
             ("astronaut", "starry_night", 1.0, steps, 512)]
    return [[str(EXAMPLES / f"{c}.jpg"), str(EXAMPLES / f"{s}.jpg"), w, n, px] for c, s, w, n, px in pairs]


with Blocks(title="Neural Style Transfer", delete_cache=(max(1, CACHE_SECONDS // 3), CACHE_SECONDS)) as demo:
    gr.Markdown("# Neural Style Transfer\nDrop in a photo and a painting, press **Stylize**, and watch the photo "
                "take on the painting's style step by step.")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                content_image = gr.Image(label="Content (your photo)", type="filepath", sources=["upload", "clipboard", "webcam"],
                                         height=260)
                style_image = gr.Image(label="Style (a painting)", type="filepath", sources=["upload", "clipboard"], height=260)
            style_weight = log_slider("style_weight", -2, "More: more painting. 1 = weight 10.")
            content_weight = log_slider("content_weight", -3, "More: more photo. 0 = weight 1.")
            with gr.Row():
                steps = gr.Slider(*bounds("steps"), value=DEFAULTS.steps, step=1, label="Iterations", elem_id="steps")
                size = gr.Slider(*bounds("size"), value=DEFAULTS.size, step=32, label="Output size (long side, px)", elem_id="size")
            style_layers = gr.CheckboxGroup(choices("style_layers"), value=list(DEFAULTS.style_layers), label="Style layers",
                                            info="Low layers: colour and fine texture. High layers: larger motifs.")
            content_layer = gr.Dropdown(choices("content_layer"), value=DEFAULTS.content_layer, label="Content layer")
            with gr.Accordion("Advanced", open=False):
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
                weights = gr.Dropdown(WEIGHT_CHOICES, value="embedded", label="VGG19 weights")
                with gr.Row():
                    second_style = gr.Image(label="Second style (optional)", type="filepath", sources=["upload", "clipboard"], height=180)
                    second_style_blend = gr.Slider(0, 1, value=0.5, step=0.05, label="Share of the second style")
            with gr.Row():
                stylize_button = gr.Button("Stylize", variant="primary")
                stop_button = gr.Button("Stop", variant="stop")
        with gr.Column():
            result = gr.Image(label="Result", type="pil", format="png", interactive=False, buttons=["download", "fullscreen"],
                              elem_id="result")
            status = gr.Markdown("Ready.", elem_id="status")
            loss_plot = gr.LinePlot(x="step", y="loss", color="term", label="Losses", height=220, elem_id="loss-plot")
            comparison = gr.ImageSlider(label="Before / after", visible=False, type="pil", interactive=False)
    gr.Examples(example_rows(), inputs=[content_image, style_image, style_weight, steps, size], cache_examples=False,
                label="Examples (click one, then Stylize)")
    with gr.Accordion("How it works", open=False):
        gr.Markdown(HOW_IT_WORKS)

    inputs = [content_image, style_image, content_weight, style_weight, steps, size, style_layers, content_layer,
              optimizer, init, preserve_colors, multiscale, tv_weight, style_scale, pooling, seed, weights,
              second_style, second_style_blend]
    stylize_button.click(arm_stop, None, None, queue=False, api_visibility="private").then(
        stylize_endpoint, inputs, [result, loss_plot, status, comparison], api_name="stylize", preprocess=False,
        concurrency_limit=CONCURRENCY, show_progress="minimal")
    stop_button.click(request_stop, None, None, api_name="stop", queue=False)
    demo.unload(forget_session)

demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)


def prepare_server() -> None:
    """What a serving process does once before its first visitor: keep freed memory for the next step
    (process-wide, see reuse_freed_memory; each run gives its memory back at its end) and load the
    network, so that the first picture starts at full speed."""
    reuse_freed_memory()
    warm_up(DEFAULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the style transfer app.")
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a temporary public share link")
    args = parser.parse_args()
    prepare_server()
    demo.launch(share=args.share, max_file_size=MAX_FILE_SIZE, show_error=False,
                server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))


if __name__ == "__main__":
    main()
