"""Pictures that remember how they were made: the settings and versions as JSON in a PNG text chunk.

Run the same settings again (same seed, same machine kind) and the same picture comes out; drop
such a PNG on the app, or pass it to `--settings-from`, to start from its settings.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin

from .version import __version__
from .images import ImageError
from .settings import Settings, SettingsError, declarations
from .weights import describe_weights

CHUNK = "nst-settings"


def record(settings: Settings) -> dict:
    """What a picture made with `settings` should carry: every setting and the versions that shape it."""
    return {"settings": asdict(settings),
            "versions": {"nst": __version__, "torch": torch.__version__, "weights": describe_weights(settings.weights)}}


def save_png(image: Image.Image, path: str | os.PathLike, settings: Settings) -> None:
    """`image` as a PNG at `path`, its settings and versions in the text chunk CHUNK."""
    info = PngImagePlugin.PngInfo()
    info.add_text(CHUNK, json.dumps(record(settings)))
    image.save(path, "PNG", pnginfo=info)


def read_record(path: str | os.PathLike) -> dict | None:
    """The record a PNG carries, or None for a picture without one. Only the file's header is read:
    the text chunk comes before the pixels, which are never decoded."""
    try:
        with Image.open(path) as image:
            text = image.info.get(CHUNK)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{Path(path).name} is not a readable image") from error
    if text is None:
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImageError(f"{Path(path).name}: its {CHUNK} text is not JSON") from error
    if not isinstance(document, dict) or not isinstance(document.get("settings"), dict):
        raise ImageError(f"{Path(path).name}: its {CHUNK} text holds no settings")
    return document


def settings_from_picture(path: str | os.PathLike) -> Settings:
    """The settings that shaped a result PNG, validated. Those of where and how fast it was made
    (device, precision, ...) are left at this machine's defaults, as are any the PNG does not name."""
    document = read_record(path)
    if document is None:
        raise ImageError(f"{Path(path).name} carries no settings (only PNGs made by this program do)")
    shaping = {declared.name for declared in declarations() if declared.declaration.group == "picture"}
    values = {name: value for name, value in document["settings"].items() if name in shaping}
    blend = values.get("style_blend")
    numbers = isinstance(blend, list) and all(isinstance(weight, (int, float)) for weight in blend)
    if numbers and len(set(blend)) <= 1:  # equal weights are the default, whatever their number
        values["style_blend"] = blend = None
    try:
        return Settings.from_values(style_count=len(blend) if isinstance(blend, list) else 1, **values)
    except SettingsError as error:
        raise ImageError(f"{Path(path).name}: its settings are not usable here: {error}") from error
