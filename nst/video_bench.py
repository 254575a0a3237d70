"""`python -m nst.video_bench CLIP STYLE`: a clip painted frame by frame with the still-picture
defaults, and in video mode, side by side: flicker (E_warp over the input's, `nst.video`), each
mode's distances to the photo and the painting per frame (`nst.distances`), and seconds per frame."""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
from PIL import Image

from .engine import stylize
from .images import open_image
from .objective import distances
from .sequence import VideoSettings, stylize_video
from .settings import Settings
from .video import Clip, temporal_consistency


def one_by_one(frames, style, settings: Settings) -> tuple[list, list[float]]:
    painted, seconds = [], []
    for frame in frames:
        started = time.perf_counter()
        painted.append(list(stylize(frame, style, settings))[-1].image)
        seconds.append(time.perf_counter() - started)
    return painted, seconds


def video_mode(clip: Clip, frame_count: int, style, settings: Settings, video: VideoSettings) -> tuple[list, list[float]]:
    painted, seconds, started = [], [], time.perf_counter()
    for frame in stylize_video(clip, style, settings, video):
        if frame.done:
            painted.append(frame.image)
            seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            if len(painted) == frame_count:
                break
    return painted, seconds


def report(name: str, painted, inputs, style, seconds: list[float]) -> dict:
    measured = [distances(picture, photo, style) for picture, photo in zip(painted, inputs)]
    return {"mode": name, **{key: round(value, 6) for key, value in temporal_consistency(painted, inputs).items()},
            "content": round(float(np.median([m["content"] for m in measured])), 4),
            "style": round(float(np.median([m["style"] for m in measured])), 4),
            "seconds_first": round(seconds[0], 2), "seconds_later": round(float(np.median(seconds[1:])), 2) if len(seconds) > 1 else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nst.video_bench", description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("style")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--temporal-weights", type=float, nargs="+", default=[VideoSettings().temporal_weight])
    parser.add_argument("--later-steps", type=int, default=VideoSettings().later_steps)
    parser.add_argument("--skip-one-by-one", action="store_true")
    parser.add_argument("--sheet", metavar="PATH.jpg", help="also write the frames side by side: the input, one by one, video mode")
    parser.add_argument("--sheet-columns", type=int, default=4, help="frames on the sheet, evenly spaced through the clip")
    parser.add_argument("--preview", metavar="PATH.webp", help="also write the video mode's frames as a looping animated WebP")
    args = parser.parse_args(argv)
    settings, style = Settings(size=args.size), open_image(args.style)
    clip = Clip.open(args.clip)
    inputs = list(itertools.islice(clip.frames(), args.frames))
    rows = [inputs]
    if not args.skip_one_by_one:
        painted, seconds = one_by_one(inputs, style, settings)
        rows.append(painted)
        print(json.dumps(report("one by one", painted, inputs, style, seconds)), flush=True)
    for weight in args.temporal_weights:
        video = VideoSettings(temporal_weight=weight, later_steps=args.later_steps)
        painted, seconds = video_mode(clip, args.frames, style, settings, video)
        name = f"video, temporal weight {weight:g}, later steps {args.later_steps or 'auto'}"
        print(json.dumps(report(name, painted, inputs, style, seconds)
                         | {"size": args.size, "frames": args.frames}), flush=True)
        rows.append(painted)
    if args.sheet:
        sheet(rows, args.sheet_columns).save(args.sheet, quality=85)
    if args.preview:
        rows[-1][0].save(args.preview, save_all=True, append_images=rows[-1][1:], duration=round(1000 / float(clip.rate)), loop=0,
                         quality=80)


def sheet(rows: list[list[Image.Image]], columns: int) -> Image.Image:
    """Rows of frames on one picture, `columns` frames evenly spaced through the clip, at the size of the painted frames."""
    width, height = rows[-1][0].size
    chosen = sorted({round(i * (len(rows[0]) - 1) / max(1, columns - 1)) for i in range(columns)})
    picture = Image.new("RGB", (width * len(chosen), height * len(rows)), "white")
    for row, frames in enumerate(rows):
        for column, index in enumerate(chosen):
            picture.paste(frames[index].resize((width, height), Image.Resampling.BICUBIC), (column * width, row * height))
    return picture


if __name__ == "__main__":
    main()
