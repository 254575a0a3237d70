"""The Gradio app: its wiring without a server, then a live server driven through gradio_client."""

import asyncio
import base64
import io
import math
import statistics
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
import handlers
import server_policy
from nst import Settings, VideoSettings, save_png, settings_from_picture

from . import raw_http
from .conftest import EXAMPLES, ROOT, STEPS, engine_is_busy, engine_is_idle

CONTENT = str(EXAMPLES / "chelsea.jpg")
STYLE = str(EXAMPLES / "starry_night.jpg")


def pair() -> dict:
    return {"content": handle_file(CONTENT), "style": handle_file(STYLE)}


def _fn(api_name):
    return next(fn for fn in app.demo.fns.values() if fn.api_name == api_name)


def test_blocks_expose_stylize_and_stop():
    stylize = _fn("stylize")
    stop = _fn("stop")
    assert stylize.concurrency_limit == 1
    assert stylize.preprocess is False  # the function validates raw values itself
    assert stylize.inputs[0].type == "filepath"
    assert stop.queue is False  # a Stop is heard while the queue is busy with the run it stops
    assert app.demo._queue.max_size == app.QUEUE_SIZE
    assert app.demo.delete_cache is not None
    assert app.demo.config["components"]  # the layout builds


def test_importing_the_app_does_no_work(tmp_path):
    """No temp folder, device probe, docstring edit or page built at import: each waits for its first use."""
    code = ("import app, handlers, server_policy\n"
            "print(server_policy.capacity.cache_info().currsize, app.build.cache_info().currsize, "
            "handlers.stylize.__doc__ == handlers.STYLIZE_SUMMARY, handlers.stop_requests._folder)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp_path)), capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.split() == ["0", "0", "True", "None"], result.stderr
    assert not list(tmp_path.iterdir())
    assert app.demo.fns  # built here: stylize's docstring now describes each parameter, once
    documented = handlers.stylize.__doc__
    assert documented.count("Args:") == 1 and all(f"\n        {name}: " in documented for name in app.API_PARAMETERS)


def test_stop_reaches_the_running_and_the_waiting_runs_of_its_session_only():
    stops = handlers.StopRequests()
    with stops.running("tab") as running:
        waiting = [stops.arm("tab"), stops.arm("tab")]  # two more clicks on Stylize while it runs
        other = stops.arm("another tab")
        stops.stop("tab")
        assert stops.stopped(running)
    for token in waiting:
        with stops.running("tab", token) as waited:
            assert stops.stopped(waited)  # stops before it starts
    with stops.running("tab", stops.arm("tab")) as later, stops.running("another tab", other) as elsewhere:
        assert not stops.stopped(later) and not stops.stopped(elsewhere)
    assert not any(stops.folder.iterdir())  # finished runs leave no flags behind


def test_style_strength_is_the_style_weight_on_a_log_scale():
    assert handlers.strength_to_weight(handlers.DEFAULT_STRENGTH) == Settings().style_weight
    weights = [handlers.strength_to_weight(strength) for strength in range(1, 11)]
    assert all(later / earlier == pytest.approx(handlers.STRENGTH_FACTOR) for earlier, later in zip(weights, weights[1:]))
    assert handlers.weight_to_strength(handlers.strength_to_weight(7.5)) == pytest.approx(7.5)


@pytest.fixture(scope="module")
def client(server_url):
    return Client(server_url, verbose=False)


@pytest.mark.server
def test_the_api_names_every_parameter_with_its_default_and_description(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/stylize"]
    parameters = {parameter["parameter_name"]: parameter for parameter in info["parameters"]}
    defaults = Settings()
    assert list(parameters)[:2] == ["content", "style"] and not parameters["content"]["parameter_has_default"]
    for name, parameter in list(parameters.items())[2:]:
        assert parameter["parameter_has_default"], name
        expected = getattr(defaults, name, None)
        assert parameter["parameter_default"] == (list(expected) if isinstance(expected, tuple) else expected), name
        assert parameter["python_type"]["description"], name
    assert [output["label"] for output in info["returns"]] == ["picture", "status", "progress", "timelapse"]


@pytest.mark.server
def test_submit_streams_frames_at_the_output_size_then_the_final_picture_with_its_settings(client):
    job = client.submit(**pair(), steps=40, size=128, style_weight=3.0, api_name="/stylize")
    outputs = list(job)
    assert len(outputs) >= 4, len(outputs)
    sizes = {Image.open(picture).size for picture, *_ in outputs}
    assert sizes == {(128, 85)}  # the 128 px scale's frames too
    assert {Image.open(picture).format for picture, _, progress, _ in outputs if not progress["done"]} == {"JPEG"}
    picture, status, progress, timelapse = outputs[-1]
    assert Image.open(picture).format == "PNG"
    assert "step 40/40" in status and "done" in status
    assert progress["done"]
    with Image.open(timelapse) as animation:
        assert animation.format == "WEBP" and animation.n_frames >= 3 and animation.size == (128, 85)
    assert len({output[1] for output in outputs}) >= 3
    restored = settings_from_picture(picture)
    assert (restored.steps, restored.size, restored.style_weight) == (40, 128, 3.0)


@pytest.mark.server
def test_cancel_stops_the_engine(client):
    job = client.submit(**pair(), steps=1000, size=128, api_name="/stylize")
    deadline = time.time() + 60
    while len(job.outputs()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert len(job.outputs()) >= 2
    assert engine_is_busy()
    job.cancel()
    assert engine_is_idle()


@pytest.mark.server
def test_stop_ends_this_clients_run_with_its_picture(server_url):
    client = Client(server_url, verbose=False)
    job = client.submit(**pair(), steps=1000, size=128, api_name="/stylize")
    deadline = time.time() + 60
    while len(job.outputs()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    client.predict(api_name="/stop")
    outputs = list(job)
    picture, status, progress, _ = outputs[-1]
    assert status.startswith("Stopped.") and "/1000" in status and progress["done"]
    assert max(Image.open(picture).size) == 128
    assert engine_is_idle()


BAD_INPUTS = [
    ({"content": None}, "Add a content image"),
    ({"style": None}, "Add a style image"),
    ({"style_weight": math.nan}, "style weight must be a number from 0 to 100000"),
    ({"content_weight": math.inf}, "content weight must be a number"),
    ({"steps": -5}, f"steps must be a whole number from 1 to {server_policy.capacity().limits['steps']}"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"size": 100000}, f"size must be a whole number from 64 to {server_policy.capacity().limits['size']}"),
    ({"size": "big"}, "size must be a whole number"),
    ({"style_layers": []}, "at least one style layer"),
    ({"style_layers": ["relu1_1", "fc7"]}, "unknown style layer 'fc7'"),
    ({"style_layer_weights": [1, 2]}, "style layer weights: give 5 values"),
    ({"content_layer": "pool9"}, "unknown content layer"),
    ({"optimizer": "sgd"}, "unknown optimizer"),
    ({"tv_weight": -1}, "tv weight must be a number from 0 to 100"),
    ({"weights": "/etc/vgg.pth"}, "unknown weights"),
    ({"style_blend": [1, 1]}, "style blend: give 1 values"),
]


@pytest.mark.server
@pytest.mark.parametrize("changes, message", BAD_INPUTS)
def test_bad_input_is_refused_with_its_reason(server_url, changes, message):
    files = {"content": raw_http.upload(server_url, CONTENT), "style": raw_http.upload(server_url, STYLE)}
    event, reply = raw_http.call(server_url, "stylize", raw_http.arguments(server_url, "stylize", **{**files, **changes}))
    assert event == "error"
    assert message in reply["error"]


@pytest.mark.server
def test_a_good_request_still_succeeds_after_bad_ones(client, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text, not a picture")
    with pytest.raises(AppError, match="not a readable image"):
        client.predict(content=handle_file(str(not_an_image)), style=handle_file(STYLE), api_name="/stylize")
    picture, status, *_ = client.predict(**pair(), steps=3, size=64, api_name="/stylize")
    assert Image.open(picture).size == (64, 43)
    assert "done" in status


@pytest.mark.server
def test_a_run_past_the_time_limit_stops_and_keeps_its_picture(client, monkeypatch):
    monkeypatch.setattr(server_policy.capacity(), "job_seconds", 1.0)
    picture, status, progress, _ = client.predict(**pair(), steps=1000, size=96, api_name="/stylize")
    assert "stopped at the time limit of 1.0 s" in status and progress["done"]
    assert max(Image.open(picture).size) == 96


def _data_uri(path: str) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(Path(path).read_bytes()).decode()


@pytest.mark.server
def test_stylize_is_an_mcp_tool_with_its_arguments_explained(server_url):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def list_and_call():
        async with streamablehttp_client(f"{server_url}/gradio_api/mcp/") as (read, write, _), ClientSession(read, write) as session:
            await session.initialize()
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            # With a progress callback Gradio streams the run's progress and returns each output as
            # its own content (without one, Gradio 6.31 returns all of them as one text).
            result = await session.call_tool("stylize", {"content": _data_uri(CONTENT), "style": _data_uri(STYLE), "size": 64, "steps": 3},
                                             progress_callback=lambda *update: progress.append(update))
            return tools, result

    progress = []
    tools, result = asyncio.run(list_and_call())
    assert set(tools) == {"stylize", "stylize_video"}  # the page's own events are not tools
    clip_tool = tools["stylize_video"]
    assert "video clip" in clip_tool.description
    clip_properties = clip_tool.inputSchema["properties"]
    assert list(clip_properties)[:2] == ["clip", "style"]
    assert "frames kept per second" in clip_properties["fps"]["description"]
    assert clip_properties["temporal_weight"]["default"] == VideoSettings().temporal_weight
    assert f"to {server_policy.capacity().clip_size})" in clip_properties["size"]["description"]
    assert all(clip_properties[name].get("description") for name in clip_properties), clip_properties
    tool = tools["stylize"]
    assert "style of a painting" in tool.description
    properties = tool.inputSchema["properties"]
    assert properties["size"]["default"] == Settings().size and "long side" in properties["size"]["description"]
    assert all(properties[name].get("description") for name in properties), properties
    assert not result.isError, result
    assert progress
    (picture,) = [item for item in result.content if item.type == "image" and item.mimeType == "image/png"]
    assert max(Image.open(io.BytesIO(base64.b64decode(picture.data))).size) == 64


def test_a_dropped_result_png_sets_the_pages_controls(tmp_path):
    settings = Settings(size=384, steps=77, style_weight=handlers.strength_to_weight(7.5), content_weight=10.0, seed=5,
                        style_layers=("relu1_1", "relu3_1"), preserve_colors="luminance").validated()
    picture = tmp_path / "result.png"
    save_png(Image.new("RGB", (8, 8)), picture, settings)
    values = dict(zip([*app.RESTORED, "status"], app.restore_settings(str(picture))))
    too_large = replace(settings, size=2048, style_blend=(0.25, 0.75)).validated(style_count=2)
    save_png(Image.new("RGB", (8, 8)), tmp_path / "large.png", too_large)
    restored = dict(zip([*app.RESTORED, "status"], app.restore_settings(str(tmp_path / "large.png"))))
    assert restored["size"] == server_policy.capacity().limits["size"] and "lowered" in restored["status"]
    assert restored["second_style_share"] == 0.75
    assert values["style_strength"] == 7.5 and values["content_weight_log"] == 1.0
    assert (values["size"], values["steps"], values["seed"]) == (384, 77, 5)
    assert values["style_layers"] == ["relu1_1", "relu3_1"] and values["preserve_colors"] == "luminance"
    assert "restored" in values["status"]
    with pytest.raises(gr.Error, match="carries no settings"):
        app.restore_settings(str(EXAMPLES / "chelsea.jpg"))


def _time_left_ratios(client) -> tuple[dict[int, float], dict, bool]:
    """One run of three scales (128, 222 and 384 px): {step: seconds left foretold / in truth} from the
    second scale on, the frames seen, and whether the machine kept its pace through the last scale."""
    # Waiting on the result, not iterating the job: gradio_client's iterator polls every millisecond,
    # and in this process (the server's) that polling slowed the steps unevenly, by up to half.
    first_step = len(STEPS.durations)
    job = client.submit(**pair(), size=384, steps=60, api_name="/stylize")
    job.result(timeout=300)
    progress = [output[2] for output in job.outputs()]
    end, first_scale = progress[-1]["elapsed"], progress[0]["size"]
    ratios = {}
    for frame in progress:
        left = end - frame["elapsed"]
        # with less left, one step's jitter is most of it: 3 s, or a quarter of a quick run
        if frame["size"] != first_scale and not frame["done"] and left >= min(3, end / 4):
            ratios[frame["step"]] = frame["seconds_left"] / left
    # The last scale's steps after its first, timed as they ran: on this VM, faulting the scale's memory
    # back in (the server trims between runs) now and then took twice a step, for several steps.
    last_scale_seen = next(frame["step"] for frame in progress if frame["size"] == progress[-1]["size"])
    last_scale = STEPS.durations[first_step:][last_scale_seen - progress[-1]["step"]:]
    steady = sum(last_scale) <= 1.4 * len(last_scale) * statistics.quantiles(last_scale, n=4)[0]
    frames = [(frame["step"], frame["size"], frame["elapsed"], frame["seconds_left"]) for frame in progress]
    seen = {"frames (step, size, elapsed, left)": frames,
            "last scale's steps (s)": [round(seconds, 3) for seconds in last_scale]}
    return ratios, seen, steady


@pytest.mark.server
def test_time_left_is_in_the_truths_range_from_the_second_scale_on(client):
    # The model is checked exactly in tests/test_timeleft.py; here, live, a band that fails an
    # estimate off by 2x (measured: 0.5-0.6 for half the truth, 0.9-1.5 as it is). A run through
    # which the machine did not keep its pace says nothing of the estimate: then another, three at most.
    for _ in range(3):
        ratios, seen, steady = _time_left_ratios(client)
        if steady:
            break
    assert len(ratios) >= 2 and steady, seen
    assert all(0.6 <= ratio <= 1.8 for ratio in ratios.values()), (ratios, seen)
