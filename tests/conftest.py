import time
from pathlib import Path

import pytest
from PIL import Image

from nst import open_image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def content() -> Image.Image:
    return open_image(EXAMPLES / "chelsea.jpg")


@pytest.fixture(scope="session")
def style() -> Image.Image:
    return open_image(EXAMPLES / "starry_night.jpg")


@pytest.fixture(scope="session")
def second_style() -> Image.Image:
    return open_image(EXAMPLES / "graf1.jpg")


@pytest.fixture(scope="session")
def server_url():
    """The app served on a free loopback port for the whole session."""
    import app

    app.prepare_server()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield app.demo.local_url.rstrip("/")
    finally:
        app.demo.close()


def cpu_seconds(window: float = 1.5) -> float:
    """CPU seconds this test process used over `window` seconds: the in-process server's engine uses
    both cores while it optimises (about 2.5 s in 1.5 s here) and next to none when idle (about 0.15)."""
    import psutil

    process = psutil.Process()
    before = sum(process.cpu_times()[:2])
    time.sleep(window)
    return sum(process.cpu_times()[:2]) - before


def engine_is_busy() -> bool:
    return cpu_seconds() > 1.0


def engine_is_idle(settle: float = 1.5) -> bool:
    """True once the engine has stopped: after `settle` seconds (one frame interval and one step), idle."""
    time.sleep(settle)
    return cpu_seconds() < 0.45
