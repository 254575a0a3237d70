"""Neural style transfer after Gatys et al.: a streaming engine shared by the app, CLI and benchmark.

`import nst` loads nothing heavy: each public name is imported from its module on first use (PEP 562),
so that `python -m nst --help` answers without loading torch.
"""

from __future__ import annotations

import importlib

from .version import __version__ as __version__  # re-exported

# Each public name and the module that holds it.
_HOMES = {"Checkpoint": "checkpoint", "CheckpointError": "checkpoint", "Interrupted": "checkpoint",
          "Frame": "observers", "stylize": "engine", "ImageError": "images", "open_image": "images", "distances": "objective",
          "save_png": "provenance", "settings_from_picture": "provenance", "scale_schedule": "schedule",
          "Settings": "settings", "SettingsError": "settings", "WeightsError": "weights",
          "stylize_video": "sequence", "VideoFrame": "sequence",
          "VideoResume": "sequence", "VideoSettings": "settings", "VideoError": "video"}

__all__ = ["Checkpoint", "CheckpointError", "Frame", "ImageError", "Interrupted", "Settings", "SettingsError", "VideoError", "VideoFrame",
           "VideoResume", "VideoSettings", "WeightsError", "distances", "open_image", "save_png", "scale_schedule", "settings_from_picture",
           "stylize", "stylize_video"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'nst' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # the next look-up finds it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
