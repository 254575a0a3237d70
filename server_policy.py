"""This server's policy, on top of the settings' declarations (nst.settings): how large and how long a
run may be, how many wait, how long files are kept, and what a request may send as a file.

The page and the API (app.py, handlers.py) take their ranges from `bounds` and their requests through
`parse_request`, so that both faces refuse the same things with the same words.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from gradio import utils as gradio_utils
from gradio.exceptions import InvalidPathError
from gradio.route_utils import delete_files_created_by_app

from nst import ImageError, Settings, SettingsError, open_image
from nst.images import open_mask
from nst.devices import resolve_device
from nst.settings import VideoSettings, declaration, shown_value
from nst.video import Clip, VideoError


def _on_zero_gpu() -> bool:
    try:
        import spaces
    except ImportError:
        return False
    return bool(getattr(getattr(spaces, "config", None), "Config", None) and spaces.config.Config.zero_gpu)


ZERO_GPU = _on_zero_gpu()

# --- Limits, queue and cache --------------------------------------------------------------------------

@dataclass
class Capacity:
    """How large and how long a run may be on this server."""

    limits: dict[str, float]  # the highest size and steps a request may ask for (Settings.validated's `limits`)
    job_seconds: float  # a run that takes longer stops and keeps its picture
    clip_seconds: float = 10.0  # the longest clip painted (its frames at the rate kept, over that rate)
    clip_size: int = 384  # a clip's frames' long side at most, in px
    clip_job_seconds: float = 900.0  # a clip that takes longer stops and keeps the frames painted so far


@functools.cache
def capacity() -> Capacity:
    """This server's capacity, decided on first use (when the page is built), not at import: it asks torch
    for the device. A shared CPU is slow: smaller pictures, fewer steps, and less time per picture."""
    on_gpu = resolve_device("auto").type != "cpu"
    limits = {"size": 4096 if on_gpu else 1024, "steps": 2000 if on_gpu else 1000}
    if on_gpu:
        return Capacity(limits, 600, clip_seconds=60.0, clip_size=1024, clip_job_seconds=1800.0)
    return Capacity(limits, 300)


def clip_bounds(name: str) -> tuple[float, float]:
    """A clip's setting's range on this server: the still's, with the clip's own size limit."""
    if name == "size":
        return declaration("size").declaration.low, capacity().clip_size
    return bounds(name)


MAX_FILE_SIZE = "10mb"
QUEUE_SIZE = 8
CONCURRENCY = 1  # one optimisation at a time: two would share the same cores and both run slower
# Uploads and results are deleted this many seconds after they were made (checked every third of it).
CACHE_SECONDS = int(os.environ.get("NST_CACHE_SECONDS", "1800"))
WEIGHT_CHOICES = [("Embedded VGG19 (Caffe, offline)", "embedded"),
                  ("ImageNet VGG19 from the Hugging Face Hub (downloads ~575 MB on first use)", "imagenet")]
SERVER_WEIGHTS = [value for _, value in WEIGHT_CHOICES]  # never a path: a visitor must not make the server read its files


def bounds(name: str) -> tuple[float, float]:
    """A setting's range, as declared and narrowed by this server's capacity."""
    spec = declaration(name).declaration
    return spec.low, capacity().limits.get(name, spec.high)


def gpu_seconds(settings: Settings) -> int:
    """ZeroGPU booking for a run: generous for the steps and size asked for, within ZeroGPU's 300 s."""
    return int(min(300, 20 + settings.steps * (settings.size / 512) ** 2 * 0.02))


def time_limit(settings: Settings) -> int:
    """Seconds a run may take before it stops and keeps its picture: within its ZeroGPU booking there."""
    seconds = capacity().job_seconds
    return min(seconds, gpu_seconds(settings) - 15) if ZERO_GPU else seconds


def on_zero_gpu(function):
    """`function` on a ZeroGPU Space's GPU, booked for `gpu_seconds` of its settings; elsewhere as it is."""
    if not ZERO_GPU:
        return function
    import spaces

    return spaces.GPU(duration=lambda content, styles, settings, *rest: gpu_seconds(settings))(function)


def sweep_cache(blocks: gr.Blocks, every: float, age: float) -> None:
    """Deletes the app's cached files older than `age` seconds, every `every` seconds, whatever happens.
    Gradio's own sweep (delete_cache) ends for good on an error, such as a job adding files while it
    walks them; this one logs the error and goes on."""
    while True:
        time.sleep(every)
        try:
            delete_files_created_by_app(blocks, age)
        except Exception:  # the next sweep gets what this one missed
            logging.getLogger(__name__).exception("cache sweep failed; retrying in %s s", every)


# --- Files: only uploads to this app, or public addresses ----------------------------------------------

ONLY_UPLOADS = ("send an image file uploaded to this app (gradio_client's handle_file does that) or the http(s) address of a "
                "public one; paths on the server are refused")
NOT_FETCHED = ("could not fetch an image from its address (only public http(s) addresses are fetched); upload the file instead "
               "(gradio_client's handle_file does that)")
WRONG_KIND = ("a value of the wrong kind: send images as files uploaded to this app (gradio_client's handle_file does that), "
              "and settings as client.view_api() lists them")


def refuse(message: str) -> gr.Error:
    """A refusal the visitor reads as it is, without a traceback in the server's log."""
    return gr.Error(message, print_exception=False)


def uploaded(payload, what: str, decode=open_image):
    """The file a request sent for `what`, decoded; None if none was sent."""
    if payload is None:
        return None
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path:
        raise refuse(f"{what}: {ONLY_UPLOADS}")
    if not Path(path).is_file():  # deleted from the upload cache; its path is the server's business
        raise refuse(f"{what}: the uploaded file is no longer on the server (uploads are kept {CACHE_SECONDS // 60} minutes); "
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


class GuardedBlocks(gr.Blocks):
    """gr.Blocks that takes files only from its upload folder or from public addresses (`_taken`),
    and refuses anything else a request sends in place of a file with a line that says what to send.

    Gradio checks a file's path only when its payload is marked as a file, so an unmarked path on the
    server would reach the events; and its own errors for values of the wrong kind name paths and hosts.
    """

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        files = list(_files(inputs))
        if not explicit_call and not all(_taken(payload) for payload in files):
            raise refuse(f"images: {ONLY_UPLOADS}")
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:  # a ValueError too, with its own message
            raise
        except InvalidPathError:
            raise refuse(f"images: {ONLY_UPLOADS}") from None
        except ValueError:  # a host Gradio refuses or cannot reach; pydantic's validation: a value of the wrong kind
            raise refuse(NOT_FETCHED if any(_is_address(payload.get("path")) for payload in files) else WRONG_KIND) from None
        except Exception:  # Gradio's download raises a bare Exception for an answer other than 200
            if any(_is_address(payload.get("path")) for payload in files):
                raise refuse(NOT_FETCHED) from None
            raise


# --- Requests: what the browser or an API client sent -> images and Settings, or gr.Error --------------

def _check_style_and_weights(style, values: dict) -> None:
    if style is None:
        raise refuse("Add a style image (the painting to borrow from).")
    if "weights" in values and values["weights"] not in SERVER_WEIGHTS:
        raise refuse(f"unknown weights {shown_value(values['weights'])}; choose one of {', '.join(SERVER_WEIGHTS)}")


def parse_request(content, style, second_style, mask=None, **values):
    """The images, validated Settings and mask (or None) of a request, or gr.Error naming what is allowed."""
    if content is None:
        raise refuse("Add a content image (the photo to repaint).")
    _check_style_and_weights(style, values)
    try:
        styles = [uploaded(style, "style image")] + ([uploaded(second_style, "second style image")] if second_style is not None else [])
        settings = Settings.from_values(style_count=len(styles), limits=capacity().limits, **values)
        return uploaded(content, "content image"), styles, settings, uploaded(mask, "mask", open_mask)
    except (ImageError, SettingsError) as error:
        raise refuse(str(error)) from None


def parse_clip_request(clip, style, fps, temporal_weight, later_steps, **values) -> tuple[Clip, list, Settings, VideoSettings]:
    """The clip, style images, Settings and VideoSettings of a clip's request, or gr.Error in one line:
    the settings are checked before the clip is opened, and the clip's length against this server's."""
    if clip is None:
        raise refuse("Add a clip (the video to repaint).")
    _check_style_and_weights(style, values)
    limits = {**capacity().limits, "size": capacity().clip_size}
    try:
        video = VideoSettings(temporal_weight=temporal_weight, fps=fps, later_steps=later_steps).validated()
        settings = Settings.from_values(style_count=1, limits=limits, **values)
        styles = [uploaded(style, "style image")]
        opened = uploaded(clip, "clip", lambda path, what: Clip.open(path, video.fps))
    except (ImageError, SettingsError, VideoError) as error:
        raise refuse(str(error)) from None
    if opened.frame_count == 0:
        raise refuse(f"{opened.path.name} gives no duration; this server paints clips that say how long they are")
    seconds, longest = opened.frame_count / opened.rate, capacity().clip_seconds
    if seconds > longest:
        raise refuse(f"{opened.path.name} is {float(seconds):.1f} s long; this server paints clips of at most {longest:g} s: "
                     "trim it first")
    return opened, styles, settings, video
