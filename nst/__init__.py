"""Neural style transfer after Gatys et al.: a streaming engine shared by the app, CLI and benchmark."""

__version__ = "0.8.0"  # before the imports below: nst.provenance reads it

from .checkpoint import Checkpoint, CheckpointError, Interrupted
from .engine import stylize
from .observers import Frame
from .images import ImageError, open_image
from .objective import distances
from .provenance import save_png, settings_from_picture
from .schedule import scale_schedule
from .sequence import VideoFrame, VideoSettings, stylize_video
from .settings import Settings, SettingsError
from .video import VideoError
from .weights import WeightsError

__all__ = ["Checkpoint", "CheckpointError", "Frame", "ImageError", "Interrupted", "Settings", "SettingsError", "VideoError", "VideoFrame",
           "VideoSettings", "WeightsError", "distances", "open_image", "save_png", "scale_schedule", "settings_from_picture", "stylize",
           "stylize_video"]
