"""Neural style transfer after Gatys et al.: a streaming engine shared by the app, CLI and benchmark."""

from .engine import Frame, stylize
from .images import ImageError, open_image
from .objective import distances
from .schedule import scale_schedule
from .settings import Settings, SettingsError
from .weights import WeightsError

__all__ = ["Frame", "ImageError", "Settings", "SettingsError", "WeightsError", "distances", "open_image", "scale_schedule",
           "stylize"]
