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
