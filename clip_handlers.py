"""What the app's clip events do: a clip painted frame by frame for the page's Clip tab and for the API
(/stylize_video, also an MCP tool). Kept apart from handlers.py (the still picture's events), whose
Stop, results folder and parameter help they share. The layout is in app.py; a clip's limits are in
server_policy.py (parse_clip_request).

No path here runs the ffmpeg program, which a fresh machine lacks: the clip comes in as Gradio's raw
upload (preprocess=False, so gr.Video converts nothing), PyAV decodes it and encodes the H.264 MP4,
and the page's player takes that MP4 as it is (format=None: Gradio neither probes nor converts it).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator

import gradio as gr

import nst
from handlers import DEFAULTS, Results, api_help, described, stop_requests, strength_to_weight
from nst import ImageError, Settings, SettingsError, VideoSettings, WeightsError
from nst.memory import release_freed_memory
from nst.settings import check_number, format_number
from nst.video import Clip, ClipWriter, VideoError
from server_policy import capacity, clip_bounds, parse_clip_request, refuse

VIDEO_DEFAULTS = VideoSettings()
CLIP_SIZE = 256  # a clip's default long side: within every server's clip limit


def clip_status(frame: nst.VideoFrame, state: str | None = None) -> str:
    progress = frame.progress
    state = state or ("done" if frame.done and frame.index + 1 == frame.frames else f"~{frame.seconds_left:.0f} s left for the clip")
    start = "a full run" if frame.fresh else f"from the frame before, {frame.reliable:.0%} reliable"
    return (f"frame {frame.index + 1}/{frame.frames} ({start}) · step {progress.step}/{progress.steps} · "
            f"{progress.size[1]}×{progress.size[0]} px · {frame.elapsed:.1f} s · {state}")


def clip_progress(frame: nst.VideoFrame, finished: bool) -> dict:
    return {"frame": frame.index + 1, "frames": frame.frames, "fresh": frame.fresh, "reliable": round(frame.reliable, 4),
            "step": frame.progress.step, "steps": frame.progress.steps, "size": list(frame.progress.size),
            "losses": frame.progress.losses, "elapsed": round(frame.elapsed, 3), "seconds_left": round(frame.seconds_left, 1),
            "done": finished}


def paint_clip(clip: Clip, styles: list, settings: Settings, video: VideoSettings, token: str,
               path: str) -> Iterator[tuple[nst.VideoFrame, str, bool]]:
    """Yields (frame, status, written) as the clip is painted into the MP4 at `path`; written once, at
    the end, when the MP4 is there. Stop and the time limit end it early, like a still's: the MP4 holds
    the frames painted so far and the frame in the making. Errors leave no MP4: before the first
    frame they are refused with gr.Error; after it, the last frame stays with a warning."""
    if stop_requests.stopped(token):
        return
    seconds = capacity().clip_job_seconds
    frame = status = None
    try:
        with ClipWriter(path, clip.rate, audio_from=clip) as writer:
            frames = nst.stylize_video(clip, styles, settings, video)
            for frame in frames:
                if frame.progress.message:
                    gr.Warning(f"frame {frame.index + 1}: {frame.progress.message}")
                status = None if frame.done else _ending(frame, token, seconds)
                if status is None:
                    status = clip_status(frame)
                    if frame.done:
                        writer.add(frame.image)
                    yield frame, status, False
                    continue
                frames.close()
                writer.add(frame.image)  # the frame in the making, as a still's Stop keeps its picture
                break
    except (VideoError, ImageError, SettingsError, WeightsError) as error:
        message = str(error)
    except Exception as error:  # out of memory and the like: say what, log where, keep serving
        logging.exception("stylize_video failed")
        message = f"the clip failed ({type(error).__name__}); try a smaller size or a shorter clip"
    else:
        yield frame, status, True
        return
    finally:
        release_freed_memory()
    if frame is None:
        raise refuse(message)
    gr.Warning(message)
    yield frame, f"stopped: {message}; no MP4 written", False


def _ending(frame: nst.VideoFrame, token: str, seconds: float) -> str | None:
    """The status of a clip that ends at this frame in the making (Stop, the time limit), or None."""
    if stop_requests.stopped(token):
        return f"Stopped. {clip_status(frame, 'stopped')}"
    if frame.elapsed > seconds:
        return f"stopped at the time limit of {seconds:g} s per clip: {clip_status(frame, 'stopped')}"
    return None


# --- The API: /stylize_video, also an MCP tool -----------------------------------------------------------

def stylize_video(clip: dict, style: dict, size: int = CLIP_SIZE, steps: int = DEFAULTS.steps,
                  style_weight: float = DEFAULTS.style_weight, content_weight: float = DEFAULTS.content_weight,
                  temporal_weight: float = VIDEO_DEFAULTS.temporal_weight, fps: float = VIDEO_DEFAULTS.fps,
                  later_steps: int = VIDEO_DEFAULTS.later_steps, seed: int = DEFAULTS.seed, request: gr.Request = None):
    """Repaint a video clip in the style of a painting, frame by frame, steadily (Ruder et al. 2016).

    Streams (frame, status, progress, video) while the clip is painted: the frame in the making,
    a status line (frame i/n, step, seconds left for the clip), the frame, step, losses and seconds
    left as numbers; at the end, video is the painted clip, an H.264 MP4 with the clip's audio.
    (Its arguments' help, below the summary, is made from the settings' declarations.)
    """
    values = {name: value for name, value in locals().items() if name not in ("clip", "style", "request", *CLIP_ONLY)}
    opened, styles, settings, video = parse_clip_request(clip, style, fps, temporal_weight, later_steps, **values)
    results = Results()
    path = str(results.folder / "stylized.mp4")
    with stop_requests.running(request.session_hash if request else "") as token:
        for frame, status, written in paint_clip(opened, styles, settings, video, token, path):
            yield frame.image, status, clip_progress(frame, written), path if written else None


CLIP_ONLY = {"temporal_weight", "fps", "later_steps"}
CLIP_HELP = {"clip": "the video to repaint (a file PyAV reads: MP4, MOV, WebM ...)",
             "style": "the painting whose textures and colours are taken (an image file)",
             "temporal_weight": "the pull of each frame toward the painted frame before it, moved along the optical flow "
                                "(0: frames painted one by one, which flicker)",
             "fps": "frames kept per second (0: all of the clip's); fewer: quicker, less smooth",
             "later_steps": "steps of each frame after the first (0: a third of a still's work)"}
CLIP_PARAMETERS = [name for name in inspect.signature(stylize_video).parameters if name != "request"]
STYLIZE_VIDEO_SUMMARY = stylize_video.__doc__


def clip_api_help(name: str) -> str:
    """One line on a /stylize_video parameter, with its range on this server."""
    if name not in CLIP_HELP:
        line = api_help(name)
        if name == "size":  # the still's range, narrowed to a clip's
            line = line.rsplit(" (", 1)[0] + " ({} to {})".format(*map(format_number, clip_bounds("size")))
        return line
    if name in CLIP_ONLY:
        low, high = VideoSettings._RANGES[name]
        return f"{CLIP_HELP[name]} ({format_number(low)} to {format_number(high)})"
    return CLIP_HELP[name]


def document_clip_api() -> None:
    """Complete stylize_video's docstring with its arguments' help on this server, before it is wired."""
    stylize_video.__doc__ = (STYLIZE_VIDEO_SUMMARY + "\n    Args:\n"
                             + "".join(f"        {name}: {clip_api_help(name)}\n" for name in CLIP_PARAMETERS))


def clip_api_input(name: str) -> gr.components.Component:
    """The API's input for a parameter: files as files (gr.File: no conversion), numbers with their range."""
    help = clip_api_help(name)
    if name in ("clip", "style"):
        return described(gr.File(type="filepath"), help)
    if name in CLIP_ONLY:
        low, high = VideoSettings._RANGES[name]
        return described(gr.Number(value=getattr(VIDEO_DEFAULTS, name), precision=0 if name == "later_steps" else None,
                                   minimum=low, maximum=high), help)
    low, high = clip_bounds(name)
    default = CLIP_SIZE if name == "size" else getattr(DEFAULTS, name)
    return described(gr.Number(value=default, precision=0 if isinstance(default, int) else None, minimum=low, maximum=high), help)


# --- The page's Clip tab ---------------------------------------------------------------------------------

def stylize_clip_page(clip, style, style_strength, steps, size, fps, temporal_weight, token, request: gr.Request):
    """Streams (frame, status, painted clip) to the Clip tab as the clip is painted."""
    try:
        check_number("style strength", style_strength, 1, 10)
    except SettingsError as error:
        raise refuse(str(error)) from None
    clip = clip.get("video", clip) if isinstance(clip, dict) else clip  # the player's value wraps the file
    opened, styles, settings, video = parse_clip_request(clip, style, fps, temporal_weight, 0, steps=steps, size=size,
                                                         style_weight=strength_to_weight(style_strength))
    path, shown = str(Results().folder / "stylized.mp4"), False
    with stop_requests.running(request.session_hash if request else "", token) as token:
        for frame, status, written in paint_clip(opened, styles, settings, video, token, path):
            shown = True
            yield frame.image, status, gr.Video(value=path, visible=True) if written else gr.skip()
    if not shown:
        yield gr.skip(), "Stopped before it started.", gr.skip()
