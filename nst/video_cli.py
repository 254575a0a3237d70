"""`python -m nst CLIP STYLE -o OUT.mp4`: a clip (recognised by its content) painted frame by frame.

The still-picture command line hands a clip over here (`nst.cli.main`); checkpoints and
--resume do not apply to clips yet.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from .images import ImageError, open_image, open_mask
from .provenance import settings_from_picture
from .sequence import VideoFrame, stylize_video
from .settings import Settings, SettingsError, VideoSettings, declarations
from .video import Clip, ClipWriter, VideoError
from .weights import WeightsError

_STILL_ONLY = {"resume": "--resume", "timelapse": "--timelapse", "save_every": "--save-every"}


def main_clip(parser: argparse.ArgumentParser, args: argparse.Namespace, unwritable) -> int:
    """Paint the clip `args.content` into the MP4 `args.output`; nothing is written where it fails."""
    output = Path(args.output)
    if output.suffix.lower() != ".mp4":
        parser.error(f"{args.content} is a clip: the output must end in .mp4: {output}")
    for name, flag in _STILL_ONLY.items():
        if getattr(args, name):
            parser.error(f"{flag} does not apply to a clip yet")
    if problem := unwritable(output, "output"):
        parser.error(problem)
    progress = None
    try:
        video = VideoSettings(**{name: getattr(args, name) for name in ("temporal_weight", "fps", "later_steps")
                                 if getattr(args, name) is not None}).validated()
        given = {declared.name: getattr(args, declared.name) for declared in declarations() if getattr(args, declared.name) is not None}
        base = settings_from_picture(args.settings_from) if args.settings_from else Settings()
        settings = replace(base, **given).validated(style_count=len(args.styles))
        clip = Clip.open(args.content, video.fps)
        styles = [open_image(path, "style image") for path in args.styles]
        mask = open_mask(args.mask) if args.mask else None
        with ClipWriter(output, clip.rate, audio_from=clip) as writer:
            for frame in stylize_video(clip, styles, settings, video, mask):
                progress = progress or tqdm(total=clip.frame_count or None, unit="frame", file=sys.stderr, dynamic_ncols=True,
                                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
                progress.set_postfix_str(f"frame {frame.index + 1}: step {frame.progress.step}/{frame.progress.steps}, "
                                         f"~{frame.seconds_left:.0f} s left")
                if frame.done:
                    writer.add(frame.image)
                    progress.update(frame.index + 1 - progress.n)
                    if args.json:
                        print(json.dumps(_line(frame)), flush=True)
    except (VideoError, ImageError, SettingsError, WeightsError) as error:
        if progress is not None:
            progress.close()
        parser.error(f"{error}; nothing written")
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        print(f"interrupted; nothing written to {output}", file=sys.stderr)
        return 130
    if progress is not None:
        progress.close()
    return 0


def _line(frame: VideoFrame) -> dict:
    return {"frame": frame.index + 1, "frames": frame.frames, "fresh": frame.fresh, "reliable": round(frame.reliable, 4),
            "steps": frame.progress.steps, "elapsed": round(frame.elapsed, 3), "seconds_left": round(frame.seconds_left, 1),
            "size": list(frame.progress.size), "losses": frame.progress.losses}
