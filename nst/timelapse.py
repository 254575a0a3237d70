"""A short animation of a picture forming, from the frames a run shows anyway (animated WebP)."""

from __future__ import annotations

import os

from PIL import Image

MAX_FRAMES = 48  # kept evenly over the run, so a long run costs no more memory than a short one
SECONDS = 4.0
HOLD_LAST = 1.0  # seconds the finished picture stays on screen before the animation loops


class Timelapse:
    """Collects pictures as a run shows them (`add`), keeping at most MAX_FRAMES evenly spread
    over the run; `save` writes them as an animated WebP of about SECONDS seconds."""

    def __init__(self, max_frames: int = MAX_FRAMES):
        self.max_frames = max_frames
        self.frames: list[Image.Image] = []
        self.stride = 1  # keep every stride-th picture offered
        self.offered = 0

    def add(self, picture: Image.Image) -> None:
        if self.offered % self.stride == 0:
            self.frames.append(picture)
            if len(self.frames) > self.max_frames:  # halve what is kept, and keep half as many from now on
                self.frames = self.frames[::2]
                self.stride *= 2
        self.offered += 1

    def finish(self, picture: Image.Image) -> None:
        """The finished picture: always the last frame, whatever the stride."""
        if not self.frames or self.frames[-1] is not picture:
            self.frames.append(picture)

    def save(self, path: str | os.PathLike, seconds: float = SECONDS) -> None:
        if not self.frames:
            raise ValueError("no frames to save")
        size = self.frames[-1].size
        frames = [frame if frame.size == size else frame.resize(size, Image.Resampling.BICUBIC) for frame in self.frames]
        each = max(20, round(1000 * seconds / len(frames)))
        durations = [each] * (len(frames) - 1) + [round(1000 * HOLD_LAST)]
        # method 0 is libwebp's fastest: the animation is a preview, made while the visitor waits
        frames[0].save(path, "WEBP", save_all=True, append_images=frames[1:], duration=durations, loop=0, quality=80, method=0)
