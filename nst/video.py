"""Clips in and out, frame by frame, with PyAV: decoding to PIL images at a constant rate, encoding
H.264 in MP4 with the input's audio, and the temporal-consistency figure of a painted clip.

Frames stream through: a clip is never held whole, so memory does not grow with its length.
A clip with a variable frame rate (common from phones) is resampled to a constant rate on its
timestamps, each slot taking the latest frame shown by then, rather than refused: the painted clip
keeps the timing, so the copied audio stays in step.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from . import flow

# Audio codecs an MP4 holds as they are; others are re-encoded to AAC.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}
# PyAV opens still pictures too (as one-frame "videos"); these demuxers read pictures.
_PICTURE_FORMATS = {"image2", "gif", "apng", "webp", "tiff"}


class VideoError(ValueError):
    """A clip that cannot be used or written; the message is one line meant for a person."""


def is_video(path: str | os.PathLike) -> bool:
    """Whether `path` holds a clip, by its content: PyAV opens it and finds a video stream, and it is
    not a still picture (which PyAV would also open)."""
    try:
        with Image.open(path):
            return False
    except (UnidentifiedImageError, OSError, ValueError):
        pass
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video) and not _is_picture_format(container.format.name)
    except (av.FFmpegError, OSError, ValueError):
        return False


def _is_picture_format(name: str) -> bool:
    return any(part in _PICTURE_FORMATS or part.endswith("_pipe") for part in name.split(","))


@dataclass(frozen=True)
class Clip:
    """A clip on disk: `rate` is the frames per second its frames come at (the input's, or fewer
    where asked), `frame_count` how many `frames()` will give, foretold from its duration."""

    path: Path
    rate: Fraction
    input_rate: Fraction
    width: int
    height: int
    frame_count: int
    has_audio: bool

    @classmethod
    def open(cls, path: str | os.PathLike, fps: float = 0.0) -> Clip:
        """The clip at `path`, its frames taken `fps` times a second (0: the input's rate; never
        more than it); VideoError for what is not a readable clip."""
        path = Path(path)
        if not path.is_file():
            raise VideoError(f"no such clip: {path}")
        if path.stat().st_size == 0:
            raise VideoError(f"{path.name} is empty")
        try:
            with av.open(str(path)) as container:
                if not container.streams.video or _is_picture_format(container.format.name):
                    raise VideoError(f"{path.name} is not a video: it has no video stream")
                stream = container.streams.video[0]
                input_rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                if not input_rate or input_rate <= 0:
                    raise VideoError(f"{path.name} gives no frame rate")
                duration = _duration(container, stream)
                width, height, has_audio = stream.codec_context.width, stream.codec_context.height, bool(container.streams.audio)
        except av.FFmpegError as error:
            raise VideoError(f"{path.name} is not a video PyAV can read, or it is corrupted: {_reason(error)}") from error
        rate = Fraction(input_rate)
        if 0 < fps < rate:
            rate = Fraction(fps).limit_denominator(1001)
        count = max(1, math.ceil(duration * rate - 0.01)) if duration else 0
        return cls(path, rate, Fraction(input_rate), width, height, count, has_audio)

    def frames(self) -> Iterator[Image.Image]:
        """The frames as RGB PIL images at `rate`, one at a time; VideoError where decoding fails
        or there is no frame."""
        given = 0
        try:
            with av.open(str(self.path)) as container:
                for image in _at_constant_rate(_timed_frames(container), self.rate, self.input_rate):
                    yield image
                    given += 1
        except av.FFmpegError as error:
            raise VideoError(f"{self.path.name} is corrupted at frame {given + 1}: {_reason(error)}") from error
        if given == 0:
            raise VideoError(f"{self.path.name} has no frames")


def _reason(error: av.FFmpegError) -> str:
    return str(getattr(error, "strerror", None) or error).splitlines()[0]


def _duration(container, stream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


def _timed_frames(container) -> Iterator[tuple[float | None, av.VideoFrame]]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    for frame in container.decode(stream):
        yield frame.time, frame


def _at_constant_rate(frames: Iterable[tuple[float | None, av.VideoFrame]], rate: Fraction,
                      input_rate: Fraction) -> Iterator[Image.Image]:
    """Slot k (at k / rate from the first frame) takes the latest frame shown by its time; frames no
    slot takes (a lower rate kept) are never converted."""
    tolerance = 0.1 / float(max(rate, input_rate))
    start = held = held_time = None
    slot = 0
    for index, (time, frame) in enumerate(frames):
        time = index / float(input_rate) if time is None else time
        if start is None:
            start = time
        if held is not None:
            while start + slot / float(rate) < time - tolerance:
                yield held.to_image()
                slot += 1
        held, held_time = frame, time
    if held is not None:
        end = held_time + 1 / float(input_rate)
        while start + slot / float(rate) < end - tolerance or slot == 0:
            yield held.to_image()
            slot += 1


class ClipWriter:
    """Writes frames as H.264 in MP4 (yuv420p, even sizes: an odd row or column is cut off) at `rate`,
    with `audio_from`'s audio, interleaved as the frames come. The file is written beside `path` under
    a temporary name and renamed at the end: a failure leaves nothing half-written."""

    def __init__(self, path: str | os.PathLike, rate: Fraction, audio_from: Clip | None = None):
        self.path, self.rate, self.audio_from = Path(path), Fraction(rate), audio_from
        self.count = 0

    def __enter__(self) -> ClipWriter:
        handle, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".part.mp4")
        os.close(handle)
        self.temporary = Path(name)
        try:
            self.output = av.open(name, "w", format="mp4")
            self.audio = _AudioCopy(self.output, self.audio_from.path) if self.audio_from and self.audio_from.has_audio else None
        except BaseException:
            self.temporary.unlink(missing_ok=True)
            raise
        self.video = None
        return self

    def add(self, image: Image.Image) -> None:
        width, height = image.width - image.width % 2, image.height - image.height % 2
        if self.video is None:
            codec = "libx264" if "libx264" in av.codecs_available else "h264"
            self.video = self.output.add_stream(codec, rate=self.rate)
            self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
            self.video.codec_context.time_base = 1 / self.rate
        elif (width, height) != (self.video.width, self.video.height):
            raise VideoError(f"frame {self.count + 1} is {width}x{height} px, the clip's frames {self.video.width}x{self.video.height}")
        frame = av.VideoFrame.from_image(image.convert("RGB").crop((0, 0, width, height)))
        frame.pts, frame.time_base = self.count, 1 / self.rate
        self.output.mux(self.video.encode(frame))
        self.count += 1
        if self.audio is not None:
            self.audio.copy_until(self.count / self.rate)

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                if self.video is None:
                    raise VideoError("no frame to write")
                self.output.mux(self.video.encode(None))
                if self.audio is not None:  # all of it after the last frame; a clip stopped early, as long as its picture
                    self.audio.copy_until(None if self.count >= self.audio_from.frame_count else self.count / self.rate)
        except BaseException:
            kind = True
            raise
        finally:
            with contextlib.suppress(av.FFmpegError, OSError):
                if self.audio is not None:
                    self.audio.close()
            try:
                self.output.close()
            finally:
                if kind is None:
                    umask = os.umask(0)
                    os.umask(umask)
                    os.chmod(self.temporary, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's owner-only
                    os.replace(self.temporary, self.path)
                else:
                    self.temporary.unlink(missing_ok=True)


class _AudioCopy:
    """The first audio stream of a clip into an output: its packets as they are where MP4 holds its
    codec, else decoded and encoded as AAC."""

    def __init__(self, output, source: Path):
        self.input = av.open(str(source))
        stream = self.input.streams.audio[0]
        self.remux = stream.codec_context.name in MP4_AUDIO
        if self.remux:
            self.stream = output.add_stream_from_template(stream)
        else:
            self.stream = output.add_stream("aac", rate=stream.codec_context.sample_rate)
        self.output, self.packets = output, self.input.demux(stream)
        self.pending, self.flushed = None, False

    def copy_until(self, seconds: float | None) -> None:
        """Packets up to `seconds` of the clip (None: all that are left)."""
        while True:
            packet = self.pending or next(self.packets, None)
            self.pending = None
            if packet is None:
                if not self.remux and not self.flushed:
                    self.output.mux(self.stream.encode(None))
                    self.flushed = True
                return
            if packet.dts is None:
                continue
            if seconds is not None and packet.pts is not None and packet.pts * packet.time_base > seconds:
                self.pending = packet
                return
            self._write(packet)

    def _write(self, packet) -> None:
        if self.remux:
            packet.stream = self.stream
            self.output.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            self.output.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.input.close()


def warping_error(frames: Sequence[Image.Image], motions: Sequence[flow.Motion]) -> float:
    """Lai et al. 2018's E_warp: the mean over consecutive pairs of the squared difference between a
    frame and the one before it warped along `motions[t]` (from frame t + 1 back to frame t), on the
    pixels the flow trusts; RGB in [0, 1], summed over channels."""
    errors = []
    for before, now, moved in zip(frames, frames[1:], motions, strict=False):
        previous = np.asarray(before, dtype=np.float32) / 255
        current = np.asarray(now, dtype=np.float32) / 255
        reliable = moved.reliability
        difference = ((current - flow.warp(previous, moved.backward)) ** 2).sum(-1)
        errors.append(float((reliable * difference).sum() / max(reliable.sum(), 1.0)))
    return float(np.mean(errors)) if errors else 0.0


def temporal_consistency(painted: Sequence[Image.Image], inputs: Sequence[Image.Image]) -> dict[str, float]:
    """How much a painted clip flickers: its E_warp with the flow of the *input* frames, and that
    divided by the input clip's own E_warp (what the flow cannot explain); 1 is as steady as the input."""
    size = painted[0].size
    inputs = [frame.resize(size, Image.Resampling.BICUBIC) for frame in inputs]
    motions = [flow.motion(before, now) for before, now in zip(inputs, inputs[1:])]
    own, of_painted = warping_error(inputs, motions), warping_error(painted, motions)
    return {"warping_error": of_painted, "input_warping_error": own, "ratio": of_painted / max(own, 1e-12)}
