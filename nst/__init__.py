"""Neural style transfer after Gatys et al.: a streaming engine shared by the app, CLI and benchmark."""

from .engine import Frame, Settings, SettingsError, scale_schedule, stylize
from .images import ImageError, open_image
from .weights import WeightsError

__all__ = ["Frame", "ImageError", "Settings", "SettingsError", "WeightsError", "open_image", "scale_schedule", "stylize"]
