"""`python -m nst CLIP STYLE -o OUT.mp4`: a clip (recognised by its content) painted frame by frame.

The still-picture command line hands a clip over here (`nst.cli.main`). Each painted frame is kept
as it is made in the folder OUT.mp4.partial (a PNG per frame, and `state.pt`: the next frame, the
input frame and the painted picture the flow's warp goes on from, the settings, and a fingerprint
of the clip's file and the style and mask images). After Ctrl-C, `--resume OUT.mp4.partial` paints
the rest and makes the clip an uninterrupted run makes. The MP4 is written whole at the end (a
temporary file, renamed) and the folder removed; `--checkpoint-every 0` keeps no folder.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .checkpoint import CheckpointError, read_document, saved_settings
from .images import ImageError, open_image, open_mask
from .provenance import settings_from_picture
from .sequence import VideoFrame, VideoResume, stylize_video
from .settings import Settings, SettingsError, VideoSettings, declarations
from .version import __version__
from .video import Clip, ClipWriter, VideoError
from .weights import WeightsError

_STILL_ONLY = {"timelapse": "--timelapse", "save_every": "--save-every"}
_VIDEO_FLAGS = ("temporal_weight", "fps", "later_steps")
FORMAT = "nst-clip-checkpoint"
STATE = "state.pt"


def main_clip(parser: argparse.ArgumentParser, args: argparse.Namespace, unwritable) -> int:
    """Paint the clip `args.content` into the MP4 `args.output`; nothing is written there where it fails."""
    output = Path(args.output)
    if output.suffix.lower() != ".mp4":
        parser.error(f"{args.content} is a clip: the output must end in .mp4: {output}")
    for name, flag in _STILL_ONLY.items():
        if getattr(args, name):
            parser.error(f"{flag} does not apply to a clip")
    if args.resume and args.settings_from:
        parser.error("--settings-from does not apply with --resume: the checkpoint holds the settings")
    if problem := unwritable(output, "output"):
        parser.error(problem)
    run = ClipRun(args, output)
    try:
        run.start()
        run.paint()
    except (VideoError, ImageError, SettingsError, WeightsError, CheckpointError) as error:
        run.close()
        parser.error(f"{error}; nothing written")
    except KeyboardInterrupt:
        run.close()
        print(run.interrupted(), file=sys.stderr)
        return 130
    run.close()
    return 0


class ClipRun:
    """One clip on the command line: its settings (a checkpoint's where resumed), the painting, its progress bar and JSON lines."""

    def __init__(self, args: argparse.Namespace, output: Path):
        self.args, self.output = args, output
        self.folder = Path(args.resume) if args.resume else output.with_name(f"{output.name}.partial") if args.checkpoint_every else None
        self.resumed: ClipCheckpoint | None = None
        self.kept = 0  # the painted frames the folder holds
        self.progress = None

    def start(self) -> None:
        """The settings, clip, styles and mask; CheckpointError where a checkpoint does not continue this clip."""
        args = self.args
        self.resumed = ClipCheckpoint.load(self.folder) if args.resume else None
        given_video = {name: getattr(args, name) for name in _VIDEO_FLAGS if getattr(args, name) is not None}
        given = {declared.name: getattr(args, declared.name) for declared in declarations() if getattr(args, declared.name) is not None}
        if self.resumed is not None:
            self.video, base = self.resumed.video, self.resumed.settings
            _check_same_video(self.resumed, given_video, self.folder)
        else:
            self.video = VideoSettings(**given_video).validated()
            base = settings_from_picture(args.settings_from) if args.settings_from else Settings()
        self.settings = replace(base, **given).validated(style_count=len(args.styles))
        self.clip = Clip.open(args.content, self.video.fps)
        self.styles = [open_image(path, "style image") for path in args.styles]
        self.mask = open_mask(args.mask) if args.mask else None
        self.identity = identity(self.clip.path, self.styles, self.mask)
        if self.resumed is not None:
            from .cli import _check_same_picture

            _check_same_picture(self.resumed, self.settings, str(self.folder))
            if self.resumed.identity != self.identity:
                raise CheckpointError(f"{self.folder} was made from another clip or other style or mask images: "
                                      "give the same ones to resume it")
            self.kept = self.resumed.resume.next_frame
        elif self.folder is not None:
            if self.folder.exists():
                print(f"note: {self.folder} holds an interrupted clip; this run replaces it (continue that one with --resume)",
                      file=sys.stderr)
            _clear(self.folder)

    def paint(self) -> None:
        """The frames kept, then the ones painted, into the MP4; the folder removed once the MP4 is whole."""
        resume = self.resumed.resume if self.resumed is not None else None
        with ClipWriter(self.output, self.clip.rate, audio_from=self.clip) as writer:
            if self.resumed is not None:
                for image in self.resumed.frames():
                    writer.add(image)
            for frame in stylize_video(self.clip, self.styles, self.settings, self.video, self.mask, resume=resume):
                self.show(frame)
                if frame.done:
                    writer.add(frame.image)
                    self.keep(frame)
                    if self.args.json:
                        print(json.dumps(_line(frame)), flush=True)
        if self.folder is not None:
            _clear(self.folder)

    def show(self, frame: VideoFrame) -> None:
        if self.progress is None:
            self.progress = tqdm(total=self.clip.frame_count or None, initial=frame.index, unit="frame", file=sys.stderr,
                                 dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        self.progress.set_postfix_str(f"frame {frame.index + 1}: step {frame.progress.step}/{frame.progress.steps}, "
                                      f"~{frame.seconds_left:.0f} s left")
        if frame.done:
            self.progress.update(frame.index + 1 - self.progress.n)

    def keep(self, frame: VideoFrame) -> None:
        """Keep a painted frame and what the next one starts from; one that cannot be written costs a line, not the run."""
        if self.folder is None:
            return
        try:
            self.folder.mkdir(exist_ok=True)  # at the first painted frame: a clip refused before it leaves no folder
            frame.image.save(self.folder / _frame_name(frame.index))
            _save_state(self.folder, frame.resume, self.settings, self.video, len(self.styles), self.identity)
            self.kept = frame.resume.next_frame
        except OSError as error:
            tqdm.write(f"could not keep frame {frame.index + 1} in {self.folder}: {error.strerror or error}; "
                       "an interrupt will not be resumable", file=sys.stderr)
            self.folder = None

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()

    def interrupted(self) -> str:
        """The line that says what an interrupt kept, and how to go on."""
        if self.folder is None or self.kept == 0:
            return f"interrupted; nothing written to {self.output}"
        args = self.args
        command = [args.content, *args.styles, "-o", args.output, *(["--mask", args.mask] if args.mask else []),
                   "--resume", str(self.folder)]
        return (f"interrupted after frame {self.kept}; kept the painted frames in {self.folder}; nothing written to {self.output}; "
                f"to continue: {_program()} {shlex.join(command)}")


@dataclass
class ClipCheckpoint:
    """An interrupted clip: its settings, the fingerprint of its clip and images, and where it goes on."""

    folder: Path
    settings: Settings
    video: VideoSettings
    style_count: int
    identity: str
    resume: VideoResume

    def frames(self) -> Iterator[Image.Image]:
        """The frames painted before the interrupt, in order."""
        for index in range(self.resume.next_frame):
            with Image.open(self.folder / _frame_name(index)) as image:
                yield image.convert("RGB")

    @classmethod
    def load(cls, folder: Path) -> ClipCheckpoint:
        """The checkpoint in `folder`, or CheckpointError: missing, not one, from another version, or not usable here."""
        path = folder / STATE
        if not path.is_file():
            raise CheckpointError(f"{folder} is not a clip's checkpoint (the folder OUT.mp4.partial an interrupted clip leaves)")
        document = read_document(path, FORMAT, "a clip's checkpoint", folder, "clip")
        try:
            resume = VideoResume(int(document["next_frame"]), Image.fromarray(document["before"].numpy()),
                                 document["painted"].numpy(), float(document["elapsed"]), tuple(document["later_seconds"]))
            checkpoint = cls(folder, saved_settings(document["settings"], int(document["style_count"])),
                             VideoSettings(**json.loads(document["video"])).validated(), int(document["style_count"]),
                             str(document["identity"]), resume)
        except SettingsError as error:
            raise CheckpointError(f"{folder}: its settings are not usable here: {error}") from error
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"{folder} is damaged: {error}") from error
        missing = [index + 1 for index in range(resume.next_frame) if not (folder / _frame_name(index)).is_file()]
        if missing:
            raise CheckpointError(f"{folder} is damaged: painted frame {missing[0]} is missing")
        return checkpoint


def _save_state(folder: Path, resume: VideoResume, settings: Settings, video: VideoSettings, style_count: int, identity: str) -> None:
    """Write state.pt whole or not at all (a temporary file, renamed over): an interrupt leaves the previous one."""
    document = {"format": FORMAT, "version": __version__, "settings": json.dumps(asdict(settings)), "video": json.dumps(asdict(video)),
                "style_count": style_count, "identity": identity, "next_frame": resume.next_frame, "elapsed": resume.elapsed,
                "later_seconds": list(resume.later_seconds), "painted": torch.from_numpy(np.ascontiguousarray(resume.painted)),
                "before": torch.from_numpy(np.asarray(resume.before.convert("RGB")).copy())}
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{STATE}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(document, file)
        os.replace(temporary, folder / STATE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def identity(clip: Path, styles: Sequence[Image.Image], mask: Image.Image | None) -> str:
    """sha256 of the clip's file and of the style and mask images' pixels: what a clip was painted from."""
    digest = hashlib.sha256()
    with open(clip, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    for role, image in [*(("style", style) for style in styles), *([("mask", mask)] if mask is not None else [])]:
        digest.update(f"{role} {image.mode} {image.width}x{image.height}\n".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def _check_same_video(resumed: ClipCheckpoint, given: dict, folder: Path) -> None:
    changed = [f"--{name.replace('_', '-')} (the checkpoint's: {getattr(resumed.video, name):g})" for name, value in given.items()
               if value != getattr(resumed.video, name)]
    if changed:
        raise CheckpointError(f"{folder} continues with its own settings; these flags change them: {', '.join(changed)}")


def _frame_name(index: int) -> str:
    return f"frame-{index + 1:06d}.png"


def _clear(folder: Path) -> None:
    """Remove what a clip's checkpoint keeps in `folder`, and the folder where nothing else is in it."""
    if not folder.is_dir():
        return
    for path in [*folder.glob("frame-*.png"), folder / STATE]:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _program() -> str:
    from .cli import program_name

    return program_name()


def _line(frame: VideoFrame) -> dict:
    return {"frame": frame.index + 1, "frames": frame.frames, "fresh": frame.fresh, "reliable": round(frame.reliable, 4),
            "steps": frame.progress.steps, "elapsed": round(frame.elapsed, 3), "seconds_left": round(frame.seconds_left, 1),
            "size": list(frame.progress.size), "losses": frame.progress.losses}
