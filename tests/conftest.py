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

    app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", max_file_size=app.MAX_FILE_SIZE, quiet=True)
    try:
        yield app.demo.local_url.rstrip("/")
    finally:
        app.demo.close()
