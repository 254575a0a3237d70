"""The Gradio app and the Space's entry point (`python app.py`, `python app.py --share`): the page's
layout, in the order a visitor acts, and what each control is wired to.

What the events do is in handlers.py; this server's limits, queue, cache and its checks on what a
request may send are in server_policy.py; the page's style is in app.css. The engine is nst.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import threading
from pathlib import Path

import gradio as gr

from handlers import (API_PARAMETERS, DEFAULT_STRENGTH, DEFAULTS, EXAMPLES, RESTORED, api_input, arm_stop, canvas, document_api,
                      example_canvas, forget_session, request_stop, restore_settings, style_picker, stylize, stylize_page)
from clip_handlers import CLIP_PARAMETERS, CLIP_SIZE, VIDEO_DEFAULTS, clip_api_input, document_clip_api, stylize_clip_page, stylize_video
from nst.memory import reuse_freed_memory
from nst.warmup import warm_up
from nst.settings import declaration
from server_policy import (CACHE_SECONDS, CONCURRENCY, MAX_FILE_SIZE, QUEUE_SIZE, WEIGHT_CHOICES, GuardedBlocks, bounds, capacity,
                           clip_bounds, sweep_cache)

STYLESHEET = Path(__file__).resolve().with_name("app.css")
# Public-domain paintings from five periods, one click each as the style (credits in examples/CREDITS.md).
GALLERY = [("panel/codex_initial.jpg", "Codex Aboensis, 15th c."), ("starry_night.jpg", "Van Gogh, 1889"),
           ("panel/munch_scream.jpg", "Munch, 1893"), ("panel/simberg_angel.jpg", "Simberg, 1903"),
           ("panel/klimt_kiss.jpg", "Klimt, 1907–08")]
# An example's brush layer, as the examples table names it, and its file in examples/masks/ (none: the whole photo).
EXAMPLE_BRUSHES = [("", ""), ("the sky", "rocket_sky")]
# The page's inputs to stylize_page, in the order of its parameters.
PAGE_INPUTS = ["content_image", "style_image", "style_strength", "content_weight_log", "steps", "size", "style_layers", "content_layer",
               "optimizer", "init", "preserve_colors", "multiscale", "tv_weight", "style_scale", "pooling", "seed", "weights",
               "second_style", "second_style_share", "painting", "mask", "mask_feather"]

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


def choices(name: str) -> list[str]:
    spec = declaration(name).declaration
    return list(spec.shown or spec.choices)


def example_rows() -> list[list]:
    """content, style, style strength, size, and what the brush has painted over the content."""
    pairs = [("chelsea", "starry_night", 5.0, 512, ""), ("astronaut", "hubble_deep_field", 6.0, 512, ""),
             ("rocket", "starry_night", 5.0, 512, "rocket_sky"), ("rocket", "graf1", 5.0, 512, ""),
             ("chelsea", "graf1", 4.0, 384, ""), ("astronaut", "starry_night", 5.0, 512, "")]
    return [[str(EXAMPLES / f"{c}.jpg"), str(EXAMPLES / f"{s}.jpg"), strength, px, painted] for c, s, strength, px, painted in pairs]


@functools.cache
def build() -> GuardedBlocks:
    """The page and its API, built once, on first use (`app.demo`, `prepare_server`, `launch`) rather than
    at import: its ranges ask this server's capacity, and its API's descriptions come from stylize's docstring."""
    document_api()  # before stylize is wired: Gradio reads the docstring then
    document_clip_api()
    with GuardedBlocks(title="Neural Style Transfer", delete_cache=(max(1, CACHE_SECONDS // 3), CACHE_SECONDS)) as demo:
        gr.Markdown("# Neural Style Transfer\nDrop in a photo and a painting (or click an example), press **Stylize**, and watch the "
                    "photo take on the painting's style step by step.")
        with gr.Tabs():
            with gr.Tab("Picture", elem_id="picture-tab"):
                picture_tab(demo)
            with gr.Tab("Clip", elem_id="clip-tab"):  # its own settings (frame rate, steadiness) and a player for its result
                clip_tab()
        wire_api()
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


def picture_tab(demo: gr.Blocks) -> None:
    """The still picture's tab: the photo and painting, the result forming, every setting."""
    # Made here for the examples to fill in, and placed further down.
    page = {"style_strength": gr.Slider(1, 10, value=DEFAULT_STRENGTH, step=0.5, label="Style strength", elem_id="strength",
                                        info="1: a light touch of the painting · 10: fully painted", render=False),
            "size": gr.Slider(*bounds("size"), value=DEFAULTS.size, step=32, label="Output size (long side, px)", elem_id="size",
                              render=False)}
    with gr.Row():
        with gr.Column():  # what the visitor brings: a photo and a painting
            page |= photo_and_painting(page)
        with gr.Column():  # what the visitor does and gets: how strongly, Stylize, and the picture forming
            page |= result_column(page)
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):  # every other setting, one click away
        page |= advanced_settings(page)
    with gr.Accordion("How it works", open=False):
        gr.Markdown(HOW_IT_WORKS)
    wire_page(demo, page)


def __getattr__(name: str):
    if name == "demo":  # the name Gradio's tools and the tests know the app by
        return build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def photo_and_painting(page: dict) -> dict:
    """The photo, the painting (uploaded or picked), the brush and the examples."""
    with gr.Row():
        content_image = gr.Image(label="Content (your photo)", type="filepath", sources=["upload", "clipboard", "webcam"],
                                 height=240, min_width=140, elem_id="content")
        style_image = gr.Image(label="Style (a painting)", type="filepath", sources=["upload", "clipboard"], height=240,
                               min_width=140, elem_id="style")  # side by side on a phone too
    gallery = gr.Gallery([(str(EXAMPLES / path), caption) for path, caption in GALLERY], label="Or pick a painting",
                         columns=len(GALLERY), rows=1, height=120, allow_preview=False, object_fit="cover", elem_id="gallery")
    with gr.Accordion("Paint where the style goes (optional)", open=False, elem_id="paint-section"):
        painting = gr.ImageEditor(label="Brush over your photo", type="pil", sources=(), transforms=(), layers=False,
                                  brush=gr.Brush(colors=[("#ff2d87", 0.6)], color_mode="fixed"), eraser=gr.Eraser(),
                                  height=320, elem_id="painting")
        mask_feather = gr.Slider(*bounds("mask_feather"), value=DEFAULTS.mask_feather, step=1, label="Feather (px)",
                                 info="Softens the edge between painted and unpainted parts. Unpainted parts stay the photo, "
                                      "or take the second style (Advanced). On an example, the painted part shows in pink; "
                                      "brushing starts a new mask.")
        mask = gr.Image(type="filepath", format="png", image_mode="L", visible=False, elem_id="mask")
    # Any name reaches canvas, which refuses the unknown ones in its own words.
    painted_example = gr.Dropdown(EXAMPLE_BRUSHES, value="", label="Style only on", visible=False, allow_custom_value=True)
    examples = gr.Examples(example_rows(), inputs=[content_image, style_image, page["style_strength"], page["size"], painted_example],
                           cache_examples=False, fn=example_canvas, outputs=[painting, mask], run_on_click=True,
                           label="Examples (click one, then Stylize)", elem_id="examples")
    examples.dataset.headers = ["Photo", "Painting", "Strength", "Size (px)", "Style only on"]  # the inputs' labels are too long
    return {"content_image": content_image, "style_image": style_image, "gallery": gallery, "painting": painting,
            "mask_feather": mask_feather, "mask": mask}


def result_column(page: dict) -> dict:
    """How strongly, Stylize and Stop, and what a run shows: the picture, its status and losses, before/after, the timelapse."""
    page["style_strength"].render()
    with gr.Row():
        stylize_button = gr.Button("Stylize", variant="primary", min_width=100, elem_id="stylize")
        stop_button = gr.Button("Stop", variant="stop", min_width=100, elem_id="stop")
    # Frames in the making go out as JPEG, smaller and quicker to make; the finished picture is a PNG with its settings.
    result = gr.Image(label="Result", type="pil", format="jpeg", interactive=False, buttons=["download", "fullscreen"],
                      height=420, elem_id="result")
    status = gr.Markdown("Ready.", elem_id="status")
    loss_plot = gr.LinePlot(x="step", y="log10 loss", color="series", label="Losses (log10)",
                            color_title="", height=270, elem_id="loss-plot")
    comparison = gr.ImageSlider(label="Before / after", visible=False, type="pil", interactive=False)
    timelapse = gr.File(label="Timelapse (animated WebP)", visible=False, elem_id="timelapse")
    return {"stylize_button": stylize_button, "stop_button": stop_button, "result": result, "status": status, "loss_plot": loss_plot,
            "comparison": comparison, "timelapse": timelapse}


def advanced_settings(page: dict) -> dict:
    """Every other setting, and the drop zone that restores a result's settings."""
    with gr.Row():
        steps = gr.Slider(*bounds("steps"), value=DEFAULTS.steps, step=1, label="Iterations", elem_id="steps")
        page["size"].render()
    style_layers = gr.CheckboxGroup(choices("style_layers"), value=list(DEFAULTS.style_layers), label="Style layers",
                                    info="Low layers: colour and fine texture. High layers: larger motifs.")
    with gr.Row():
        content_layer = gr.Dropdown(choices("content_layer"), value=DEFAULTS.content_layer, label="Content layer")
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
    return {"steps": steps, "style_layers": style_layers, "content_layer": content_layer, "content_weight_log": content_weight,
            "optimizer": optimizer, "init": init, "preserve_colors": preserve_colors, "multiscale": multiscale, "pooling": pooling,
            "seed": seed, "tv_weight": tv_weight, "style_scale": style_scale, "weights": weights, "second_style": second_style,
            "second_style_share": second_style_share, "saved_picture": saved_picture}


def clip_tab() -> None:
    """A clip and a painting in, the painted clip out: frames show as they are made, then the MP4 plays and downloads.
    The player takes the clip as uploaded and shows the MP4 as written (format=None): no ffmpeg program is needed."""
    limits = capacity()
    with gr.Row():
        with gr.Column():
            with gr.Row():
                clip = gr.Video(label="Clip (a short video)", sources=["upload"], format=None, include_audio=True, height=240,
                                min_width=140, elem_id="clip")
                style = gr.Image(label="Style (a painting)", type="filepath", sources=["upload", "clipboard"], height=240,
                                 min_width=140, elem_id="clip-style")
            gallery = gr.Gallery([(str(EXAMPLES / path), caption) for path, caption in GALLERY], label="Or pick a painting",
                                 columns=len(GALLERY), rows=1, height=120, allow_preview=False, object_fit="cover",
                                 elem_id="clip-gallery")
            gr.Examples([[str(EXAMPLES / "walkers.mp4"), str(EXAMPLES / "starry_night.jpg")]], inputs=[clip, style],
                        cache_examples=False, label="Example (click it, then Paint the clip)", elem_id="clip-examples")
            strength = gr.Slider(1, 10, value=DEFAULT_STRENGTH, step=0.5, label="Style strength", elem_id="clip-strength")
            with gr.Row():
                size = gr.Slider(*clip_bounds("size"), value=CLIP_SIZE, step=32, label="Frame size (long side, px)", elem_id="clip-size")
                steps = gr.Slider(*bounds("steps"), value=DEFAULTS.steps, step=1, label="Iterations of the first frame",
                                  info="Later frames start from the one before and take a third of the work", elem_id="clip-steps")
            with gr.Row():
                fps = gr.Slider(0, 30, value=VIDEO_DEFAULTS.fps, step=1, label="Frames per second kept (0: all)", elem_id="clip-fps")
                temporal_weight = gr.Slider(0, 100, value=VIDEO_DEFAULTS.temporal_weight, step=1, label="Steadiness (temporal weight)",
                                            info="0: each frame painted on its own (flickers)", elem_id="clip-temporal")
            gr.Markdown(f"This server paints clips of up to {limits.clip_seconds:g} s, frames up to {limits.clip_size} px.")
        with gr.Column():
            with gr.Row():
                paint_button = gr.Button("Paint the clip", variant="primary", min_width=100, elem_id="paint-clip")
                stop_button = gr.Button("Stop", variant="stop", min_width=100, elem_id="clip-stop")
            frame = gr.Image(label="Frame being painted", type="pil", format="jpeg", interactive=False, height=320,
                             elem_id="clip-frame")
            status = gr.Markdown("Ready.", elem_id="clip-status")
            painted = gr.Video(label="Painted clip (MP4)", format=None, interactive=False, visible=False, buttons=["download"],
                               elem_id="painted-clip")
    gallery.select(style_picker([str(EXAMPLES / path) for path, _ in GALLERY]), None, style, api_visibility="private")
    run_token = gr.State()
    paint_button.click(arm_stop, None, run_token, queue=False, api_visibility="private").then(
        stylize_clip_page, [clip, style, strength, steps, size, fps, temporal_weight, run_token], [frame, status, painted],
        api_visibility="private", preprocess=False, concurrency_limit=CONCURRENCY, concurrency_id="stylize", show_progress="minimal")
    stop_button.click(request_stop, None, None, api_visibility="private", queue=False)


def wire_page(demo: gr.Blocks, page: dict) -> None:
    """The page's events: a new photo, Stylize and Stop, the gallery, restoring settings, a tab closed."""
    page_inputs = [page[name] for name in PAGE_INPUTS]
    content_image, painting, mask, status = page["content_image"], page["painting"], page["mask"], page["status"]
    content_image.input(canvas, content_image, [painting, mask], queue=False, api_visibility="private")  # a new photo: a clean canvas
    painting.clear(lambda: None, None, mask, queue=False, api_visibility="private")
    run_token = gr.State()  # the stop flag of the run a click queues
    page["stylize_button"].click(arm_stop, None, run_token, queue=False, api_visibility="private").then(
        stylize_page, [*page_inputs, run_token], [page[name] for name in ("result", "loss_plot", "status", "comparison", "timelapse")],
        api_visibility="private", preprocess=False, concurrency_limit=CONCURRENCY, concurrency_id="stylize", show_progress="minimal")
    page["stop_button"].click(request_stop, None, None, api_name="stop", api_visibility="undocumented", queue=False)
    page["gallery"].select(style_picker([str(EXAMPLES / path) for path, _ in GALLERY]), None, page["style_image"],
                           api_visibility="private")
    page["saved_picture"].upload(restore_settings, page["saved_picture"], [page[name] for name in RESTORED] + [status],
                                 api_visibility="private")
    demo.unload(forget_session)


def wire_api() -> None:
    """The API (/stylize and /stylize_video, also MCP tools): hidden inputs named, typed and defaulted by the settings' declarations."""
    api_inputs = [api_input(name) for name in API_PARAMETERS]
    api_outputs = [gr.Image(type="filepath", format="jpeg", visible=False, label="picture"),  # JPEG frames, as in the Result box
                   gr.Textbox(visible=False, label="status"), gr.JSON(visible=False, label="progress"),
                   gr.File(visible=False, label="timelapse")]
    gr.Button(visible=False).click(stylize, api_inputs, api_outputs, api_name="stylize", preprocess=False,
                                   concurrency_limit=CONCURRENCY, concurrency_id="stylize")
    clip_outputs = [gr.Image(type="filepath", format="jpeg", visible=False, label="frame"), gr.Textbox(visible=False, label="status"),
                    gr.JSON(visible=False, label="progress"), gr.File(visible=False, label="video")]
    gr.Button(visible=False).click(stylize_video, [clip_api_input(name) for name in CLIP_PARAMETERS], clip_outputs,
                                   api_name="stylize_video", preprocess=False, concurrency_limit=CONCURRENCY, concurrency_id="stylize")


def prepare_server() -> None:
    """What a serving process does once before its first visitor: keep freed memory for the next step
    (process-wide; each run gives its memory back at its end), load the network and time a few small
    steps (warm_up), so that the first picture starts at full speed and foresees its time left, and
    sweep the cache."""
    demo = build()
    reuse_freed_memory()
    warm_up(DEFAULTS)
    threading.Thread(target=sweep_cache, args=(demo, *demo.delete_cache), daemon=True, name="sweep-cache").start()


def launch(**options):
    """Serve the app as it is meant to be served: its style, the upload cap, errors without their
    internals, and the API as an MCP server too (at /gradio_api/mcp/)."""
    return build().launch(css_paths=[STYLESHEET], max_file_size=MAX_FILE_SIZE, show_error=False, mcp_server=True, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the style transfer app.")
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a temporary public share link")
    args = parser.parse_args()
    prepare_server()
    launch(share=args.share, server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))


if __name__ == "__main__":
    main()
