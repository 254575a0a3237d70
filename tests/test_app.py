"""The Gradio app: its wiring without a server, then a live server driven through gradio_client."""

import math
import time

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from nst import Settings

from . import raw_http
from .conftest import EXAMPLES, engine_is_busy, engine_is_idle

CONTENT = str(EXAMPLES / "chelsea.jpg")
STYLE = str(EXAMPLES / "starry_night.jpg")


def request(**changes):
    """The /stylize arguments in order, small and fast unless changed."""
    values = dict(content=handle_file(CONTENT), style=handle_file(STYLE), content_weight_log=0.0, style_weight_log=1.0,
                  steps=30, size=96, style_layers=list(Settings().style_layers), content_layer="relu4_2",
                  optimizer="adam", init="content", preserve_colors="none", multiscale=True, tv_weight=0.0,
                  style_scale=1.0, pooling="max", seed=0, weights="embedded", second_style=None, second_style_blend=0.5)
    values.update(changes)
    return list(values.values())


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


def test_stop_reaches_the_running_and_the_waiting_runs_of_its_session_only():
    stops = app.StopRequests()
    with stops.running("tab") as running:
        stops.arm("tab")  # two more clicks on Stylize while it runs
        stops.arm("tab")
        stops.stop("tab")
        assert running.is_set()
    for _ in range(2):
        with stops.running("tab") as waited:
            assert waited.is_set()  # stops before it starts
    stops.arm("tab")
    with stops.running("tab") as later, stops.running("another tab") as elsewhere:
        assert not later.is_set() and not elsewhere.is_set()


@pytest.fixture(scope="module")
def client(server_url):
    return Client(server_url, verbose=False)


@pytest.mark.server
def test_submit_streams_frames_then_the_final_picture(client):
    job = client.submit(*request(steps=40, size=128), api_name="/stylize")
    outputs = list(job)
    assert len(outputs) >= 4, len(outputs)
    picture, plot, status, comparison = outputs[-1]
    result = Image.open(picture)
    assert max(result.size) == 128 and result.format == "PNG"
    assert "step 40/40" in status and "done" in status
    assert comparison is not None
    frames_seen = [output[2] for output in outputs]
    assert len(set(frames_seen)) >= 3


@pytest.mark.server
def test_cancel_stops_the_engine(client):
    job = client.submit(*request(steps=1000, size=128), api_name="/stylize")
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
    job = client.submit(*request(steps=1000, size=128), api_name="/stylize")
    deadline = time.time() + 60
    while len(job.outputs()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    client.predict(api_name="/stop")
    outputs = list(job)
    picture, _, status, comparison = outputs[-1]
    assert status.startswith("Stopped.") and "/1000" in status
    assert max(Image.open(picture).size) == 128 and comparison is not None
    assert engine_is_idle()


BAD_INPUTS = [
    ({"content": None}, "Add a content image"),
    ({"style": None}, "Add a style image"),
    ({"style_weight_log": math.nan}, "style weight (log10) must be a number from -2 to 5"),
    ({"content_weight_log": math.inf}, "content weight (log10) must be a number"),
    ({"steps": -5}, f"steps must be a whole number from 1 to {app.LIMITS['steps']}"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"size": 100000}, f"size must be a whole number from 64 to {app.LIMITS['size']}"),
    ({"size": "big"}, "size must be a whole number"),
    ({"style_layers": []}, "at least one style layer"),
    ({"style_layers": ["relu1_1", "fc7"]}, "unknown style layer 'fc7'"),
    ({"content_layer": "pool9"}, "unknown content layer"),
    ({"optimizer": "sgd"}, "unknown optimizer"),
    ({"tv_weight": -1}, "tv weight must be a number from 0 to 100"),
]


@pytest.mark.server
@pytest.mark.parametrize("changes, message", BAD_INPUTS)
def test_bad_input_is_refused_with_its_reason(server_url, changes, message):
    files = {"content": raw_http.upload(server_url, CONTENT), "style": raw_http.upload(server_url, STYLE)}
    event, reply = raw_http.call(server_url, "stylize", request(**{**files, **changes}))
    assert event == "error"
    assert message in reply["error"]


@pytest.mark.server
def test_a_good_request_still_succeeds_after_bad_ones(client, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text, not a picture")
    with pytest.raises(AppError, match="not a readable image"):
        client.predict(*request(content=handle_file(str(not_an_image))), api_name="/stylize")
    picture, _, status, _ = client.predict(*request(steps=3, size=64), api_name="/stylize")
    assert Image.open(picture).size == (64, 43)
    assert "done" in status


@pytest.mark.server
def test_a_run_past_the_time_limit_stops_and_keeps_its_picture(client, monkeypatch):
    monkeypatch.setattr(app, "JOB_SECONDS", 1.0)
    picture, _, status, comparison = client.predict(*request(steps=1000, size=96), api_name="/stylize")
    assert "stopped at the time limit of 1.0 s" in status
    assert max(Image.open(picture).size) == 96
    assert comparison is not None
