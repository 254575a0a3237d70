"""The app's clips: /stylize_video on a live server through gradio_client, its refusals, Stop, and the
MP4 it writes, opened with PyAV."""

import shutil
import time
from fractions import Fraction

import av
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import server_policy
from nst.video import ClipWriter

from .conftest import EXAMPLES, engine_is_idle

CLIP = str(EXAMPLES / "walkers.mp4")  # 256×192, 10 fps, 4 s
STYLE = str(EXAMPLES / "starry_night.jpg")


@pytest.fixture(scope="module")
def client(server_url):
    return Client(server_url, verbose=False)


def small_clip(**changes) -> dict:
    """The example clip at 64 px, two frames (one every two seconds of its four), few steps."""
    return {"clip": handle_file(CLIP), "style": handle_file(STYLE), "size": 64, "steps": 4, "fps": 0.5, "later_steps": 2, **changes}


def mp4_facts(path: str) -> tuple[str, int, int, int]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, stream.codec_context.width, stream.codec_context.height, frames


@pytest.mark.server
def test_stylize_video_streams_painted_frames_then_a_playable_mp4(client):
    outputs = list(client.submit(**small_clip(), api_name="/stylize_video"))
    statuses = [status for _, status, _, _ in outputs]
    assert any(status.startswith("frame 1/2") for status in statuses) and any(status.startswith("frame 2/2") for status in statuses)
    assert all("s left for the clip" in status for status in statuses if status.startswith("frame 1/2")), statuses
    assert {Image.open(frame).size for frame, *_ in outputs} == {(64, 48)}
    assert all(video is None for *_, video in outputs[:-1])
    _, status, progress, video = outputs[-1]
    assert progress["done"] and (progress["frame"], progress["frames"]) == (2, 2) and "done" in status
    assert mp4_facts(video) == ("h264", 64, 48, 2)


@pytest.mark.server
def test_a_clip_past_the_servers_length_is_refused_then_a_good_one_is_served(client, tmp_path):
    seconds = server_policy.capacity().clip_seconds + 1
    long_clip = tmp_path / "long.mp4"
    with ClipWriter(long_clip, Fraction(1)) as writer:  # one small frame a second
        for second in range(int(seconds)):
            writer.add(Image.new("RGB", (32, 24), (second * 20 % 256, 90, 160)))
    with pytest.raises(AppError, match=rf"long\.mp4 is {seconds:.1f} s long; this server paints clips of at most "
                                       rf"{server_policy.capacity().clip_seconds:g} s"):
        client.predict(**small_clip(clip=handle_file(str(long_clip)), fps=0), api_name="/stylize_video")
    too_large = server_policy.capacity().clip_size + 32
    with pytest.raises(AppError, match=f"size must be a whole number from 64 to {server_policy.capacity().clip_size}"):
        client.predict(**small_clip(size=too_large), api_name="/stylize_video")
    *_, progress, video = client.predict(**small_clip(fps=0.25), api_name="/stylize_video")  # one frame
    assert progress["done"] and mp4_facts(video) == ("h264", 64, 48, 1)


def _truncated(path) -> None:
    path.write_bytes((EXAMPLES / "walkers.mp4").read_bytes()[:3000])


BAD_CLIPS = [
    ("notes.mp4", lambda path: path.write_text("this is text, not a clip"), "notes.mp4 is not a video PyAV can read, or it is corrupted"),
    ("still.jpg", lambda path: shutil.copy(STYLE, path), "still.jpg is not a video: it has no video stream"),
    ("empty.mp4", lambda path: path.write_bytes(b""), "empty.mp4 is empty"),
    ("cut.mp4", _truncated, "cut.mp4 is (not a video PyAV can read, or it is )?corrupted"),
]


@pytest.mark.server
@pytest.mark.parametrize("name, make, message", BAD_CLIPS, ids=[name for name, *_ in BAD_CLIPS])
def test_a_file_that_is_no_readable_clip_is_refused_in_one_line(client, tmp_path, name, make, message):
    bad = tmp_path / name
    make(bad)
    with pytest.raises(AppError, match=message) as refused:
        client.predict(**small_clip(clip=handle_file(str(bad))), api_name="/stylize_video")
    assert "\n" not in str(refused.value.args[0])


@pytest.mark.server
def test_stop_ends_the_clip_with_the_frames_painted_so_far(server_url):
    client = Client(server_url, verbose=False)
    job = client.submit(**small_clip(steps=1000, fps=1), api_name="/stylize_video")
    deadline = time.time() + 60
    while len(job.outputs()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    client.predict(api_name="/stop")
    _, status, progress, video = list(job)[-1]
    assert status.startswith("Stopped. frame 1/4") and progress["done"], status
    assert mp4_facts(video) == ("h264", 64, 48, 1)  # the frame in the making, as a still's Stop keeps its picture
    assert engine_is_idle()


@pytest.mark.server
def test_a_clip_past_the_time_limit_stops_and_keeps_its_frames(client, monkeypatch):
    monkeypatch.setattr(server_policy.capacity(), "clip_job_seconds", 1.0)
    _, status, progress, video = client.predict(**small_clip(steps=1000, fps=1), api_name="/stylize_video")
    assert status.startswith("stopped at the time limit of 1 s per clip: frame 1/4") and progress["done"], status
    assert mp4_facts(video) == ("h264", 64, 48, 1)
