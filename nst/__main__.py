"""`python -m nst CONTENT STYLE [STYLE ...] -o OUT.png`: style transfer from the command line.

Every setting's flag, type, choices and help come from its declaration in `nst.settings`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from tqdm import tqdm

from . import distributed, video_cli
from .checkpoint import Checkpoint, CheckpointError, Interrupted, interrupts_wait_for_steps
from .engine import stylize
from .images import ImageError, open_image, open_mask
from .provenance import save_png, settings_from_picture
from .runtime import use_memory_policy
from .settings import Declared, Settings, SettingsError, declarations, resolve_device
from .timelapse import Timelapse
from .video import is_video
from .weights import WeightsError

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block; under torchrun, from the first process alone
        self.exit(2, f"{self.prog}: error: {message}\n" if distributed.first() else None)


def _flag(parser: argparse.ArgumentParser, declared: Declared) -> None:
    spec = declared.declaration
    options: dict = {"default": None, "help": f"{spec.help} ({declared.describe() + '; ' if declared.describe() else ''}"
                                              f"default {declared.shown_default})".replace("%", "%%")}
    if declared.kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif declared.kind is tuple:
        options |= {"nargs": "+", "type": declared.item, "metavar": "LAYER" if spec.choices else "W"}
    elif spec.choices and not spec.shown:
        options["choices"] = spec.choices
    else:
        options["type"] = declared.kind
    parser.add_argument(f"--{declared.name.replace('_', '-')}", **options)


def program_name() -> str:
    """The command as the user ran it: `nst` when installed as a command, else `python -m nst`."""
    return "nst" if Path(sys.argv[0]).stem == "nst" else "python -m nst"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=program_name(), description="Neural style transfer (Gatys et al.) with a pretrained VGG19.")
    parser.add_argument("content", help="the photo whose arrangement is kept")
    parser.add_argument("styles", nargs="+", metavar="style", help="one or more style images (paintings)")
    parser.add_argument("-o", "--output", required=True,
                        help="where to write the result (.png, .jpg or .webp; a PNG carries its settings, see --settings-from)")
    parser.add_argument("--mask", metavar="MASK.png", help="where the style goes: white takes the (first) style; black keeps the photo, "
                        "or takes the second style when two are given; grey blends (a transparent image's alpha counts)")
    parser.add_argument("--settings-from", metavar="PICTURE.png",
                        help="start from the settings a result PNG was made with; other flags override them")
    for group in ("picture", "run"):
        section = parser.add_argument_group("the picture" if group == "picture" else "where and how fast it is made")
        for declared in declarations():
            if declared.declaration.group == group:
                _flag(section, declared)
    parser.add_argument("--save-every", type=int, default=0, metavar="N", help="also write OUTPUT-stepN.png every N steps")
    parser.add_argument("--timelapse", metavar="PATH.webp", help="also write an animation of the picture forming (animated WebP)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per frame to stdout")
    parser.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS",
                        help="save the run to OUTPUT.ckpt (out.png: out.png.ckpt) every SECONDS and on Ctrl-C, to continue it "
                        "with --resume; a finished run deletes it (default 300; 0: never)")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue the run a checkpoint holds, with the same images "
                        "and its settings (a flag that changes the picture is refused; where and how fast it runs may change)")
    video_cli.add_video_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if is_video(args.content) or Path(args.output).suffix.lower() == ".mp4":  # a clip by its content, or a clip asked for
        return video_cli.main_clip(parser, args, _unwritable)
    speaks = distributed.first()  # under torchrun, the first process alone writes and reports; the others only a failure
    if not speaks:
        warnings.simplefilter("ignore")
    output = Path(args.output)
    if output.suffix.lower() not in OUTPUT_FORMATS:
        parser.error(f"output must end in {', '.join(OUTPUT_FORMATS)}: {output}")
    if args.save_every < 0:
        parser.error("--save-every must be 0 or more")
    if not args.checkpoint_every >= 0:
        parser.error("--checkpoint-every must be 0 or more seconds")
    if args.resume and args.settings_from:
        parser.error("--settings-from does not apply with --resume: the checkpoint holds the settings")
    if args.timelapse and Path(args.timelapse).suffix.lower() != ".webp":
        parser.error(f"--timelapse must end in .webp: {args.timelapse}")
    for path, what in [(output, "output")] + ([(Path(args.timelapse), "--timelapse")] if args.timelapse else []):
        problem = _unwritable(path, what) if speaks else None
        if problem:
            parser.error(problem)
    given = {declared.name: getattr(args, declared.name) for declared in declarations() if getattr(args, declared.name) is not None}
    if args.save_every:
        given.setdefault("frame_interval", 0.0)
    progress = frame = resumed = None  # the bar is made at the first frame, so that a refusal before it stays one line
    checkpoint_path = output.with_name(f"{output.name}.ckpt") if args.checkpoint_every else None
    try:
        if args.resume:
            resumed = Checkpoint.load(args.resume)
            base = resumed.settings
        else:
            base = settings_from_picture(args.settings_from) if args.settings_from else Settings()
        # A picture's weights per style layer or style image belong to its layers and images: new ones
        # start equal. A mask takes no blend: it says where each style goes.
        if "style_layers" in given:
            given.setdefault("style_layer_weights", None)
        if base.style_blend is not None and (len(base.style_blend) != len(args.styles) or args.mask):
            given.setdefault("style_blend", None)
        settings = replace(base, **given).validated(style_count=len(args.styles))
        if resumed is not None:
            _check_same_picture(resumed, settings, args.resume)
        if distributed.launched():
            _check_for_processes(settings)
            distributed.start(resolve_device(settings.device))
            signal.signal(signal.SIGTERM, partial(_ended_by_torchrun, parser.prog, speaks))
        use_memory_policy(settings.size, settings.tile)
        content = open_image(args.content, "content image")
        styles = [open_image(path, "style image") for path in args.styles]
        mask = open_mask(args.mask) if args.mask else None
        timelapse = Timelapse() if args.timelapse else None
        if checkpoint_path is not None and speaks and checkpoint_path.exists() and not args.resume:
            print(f"note: {checkpoint_path} holds an interrupted run; this run replaces it (continue that one with --resume)",
                  file=sys.stderr)
        next_checkpoint = time.monotonic() + args.checkpoint_every
        with interrupts_wait_for_steps():
            for frame in stylize(content, styles, settings, mask=mask, resume=resumed):
                if not speaks:  # only the first of torchrun's processes writes and prints
                    continue
                if checkpoint_path and not frame.done and time.monotonic() >= next_checkpoint:
                    _save_checkpoint(frame.save_checkpoint, checkpoint_path)
                    next_checkpoint = time.monotonic() + args.checkpoint_every
                if timelapse:
                    timelapse.add(frame.image)
                if args.save_every and frame.step % args.save_every == 0 and not frame.done:
                    step_path = output.with_name(f"{output.stem}-step{frame.step}.png")
                    _write(parser, step_path, partial(frame.image.save, step_path))
                progress = progress or tqdm(total=frame.steps, unit="step", file=sys.stderr, dynamic_ncols=True,
                                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
                progress.update(frame.step - progress.n)
                progress.set_postfix_str(f"{frame.size[1]}x{frame.size[0]}, ~{frame.seconds_left:.0f} s left, "
                                         f"loss {frame.losses['total']:.4g}")
                if args.json:
                    _print_json(frame)
    except (ImageError, SettingsError, WeightsError, CheckpointError) as error:
        parser.error(str(error))
    except distributed.WorldError as error:  # nothing is written: the picture is not the whole run's
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # this line is the one said; torchrun's SIGTERM may follow
        if progress is not None:
            progress.close()
            progress = None
        print(f"{parser.prog}: error: process {distributed.rank()} of {distributed.world_size()}: {error}; nothing written",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        if progress is not None:
            progress.close()
            progress = None
        if speaks:
            print(_interrupted(interrupt, frame, checkpoint_path, args), file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()
        if distributed.launched():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the one line would say nothing was written
            distributed.stop()
    if not speaks:
        return 0
    if OUTPUT_FORMATS[output.suffix.lower()] == "PNG":
        _write(parser, output, partial(save_png, frame.image, output, settings))
    else:
        _write(parser, output, partial(frame.image.save, output, OUTPUT_FORMATS[output.suffix.lower()]))
    if timelapse:
        timelapse.finish(frame.image)
        _write(parser, Path(args.timelapse), partial(timelapse.save, args.timelapse))
    if checkpoint_path is not None:  # the run has ended: nothing is left to resume
        checkpoint_path.unlink(missing_ok=True)
    if frame.message:
        print(f"stopped early: {frame.message}; wrote {output}", file=sys.stderr)
        return 1
    return 0


def _check_same_picture(resumed: Checkpoint, settings: Settings, path: str) -> None:
    """CheckpointError unless the command line asks for the picture the checkpoint was making: as
    many style images, and its settings (flags may repeat them, or change where and how fast it runs)."""
    if resumed.style_count != len(settings.style_blend):
        raise CheckpointError(f"{path} was made with {resumed.style_count} style image(s), not {len(settings.style_blend)}")
    changed = [f"--{declared.name.replace('_', '-')} (the checkpoint's: {_shown(getattr(resumed.settings, declared.name))})"
               for declared in declarations() if declared.declaration.group == "picture"
               and getattr(settings, declared.name) != getattr(resumed.settings, declared.name)]
    if changed:
        raise CheckpointError(f"{path} continues with its own settings; these flags change them: {', '.join(changed)}")


def _shown(value) -> str:
    if isinstance(value, tuple):
        return " ".join(f"{item:.4g}" if isinstance(item, float) else str(item) for item in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _save_checkpoint(save: Callable[[Path], None], path: Path) -> None:
    """Save a periodic checkpoint; one that cannot be written costs a line, not the run."""
    try:
        save(path)
    except (OSError, CheckpointError) as error:
        tqdm.write(f"could not save the checkpoint {path}: {getattr(error, 'strerror', None) or error}", file=sys.stderr)


def _interrupted(interrupt: KeyboardInterrupt, frame, checkpoint_path: Path | None, args: argparse.Namespace) -> str:
    """Save the checkpoint of an interrupted run; the line that says where it is and how to go on."""
    if checkpoint_path is None:
        return "interrupted"
    try:
        if isinstance(interrupt, Interrupted):  # in the run: its checkpoint is the last finished step's
            if interrupt.checkpoint is None:
                kept = f"; {args.resume} is as it was" if args.resume else ""
                return f"interrupted before a step had finished: no checkpoint saved{kept}"
            interrupt.checkpoint.save(checkpoint_path)
            step = interrupt.checkpoint.step
        elif frame is not None and not frame.done:  # while the run was paused at a frame
            frame.save_checkpoint(checkpoint_path)
            step = frame.step
        else:
            return "interrupted"
    except (OSError, CheckpointError) as error:
        return f"interrupted; no checkpoint saved: {getattr(error, 'strerror', None) or error}"
    except KeyboardInterrupt:  # a second Ctrl-C while saving: the last whole checkpoint, if any, stays
        return "interrupted again while saving: no checkpoint saved"
    command = [args.content, *args.styles, "-o", args.output, *(["--mask", args.mask] if args.mask else []),
               "--resume", str(checkpoint_path)]
    return f"interrupted after step {step}; saved {checkpoint_path}; to continue: {program_name()} {shlex.join(command)}"


def _check_for_processes(settings: Settings) -> None:
    """What a run shared among torchrun's processes cannot take."""
    if settings.tile == "off":
        raise SettingsError("tile off computes the whole picture in every process: under torchrun, give tile auto or a side in px")
    if settings.device.startswith("cuda:"):
        raise SettingsError(f"device {settings.device} under torchrun: give auto or cuda; each process takes the GPU of its local rank")


def _ended_by_torchrun(program: str, speaks: bool, *_) -> None:
    """torchrun ends every process with SIGTERM when one of them fails: one line rather than a silent end."""
    after_the_progress_bar = "\n" if speaks else ""
    print(f"{after_the_progress_bar}{program}: error: process {distributed.rank()} of {distributed.world_size()}: ended by SIGTERM "
          "(torchrun ends all the processes when one fails); nothing written", file=sys.stderr, flush=True)
    os._exit(2)


def _unwritable(path: Path, what: str) -> str | None:
    """Why `path` cannot be written, or None: tried before the run, so that its minutes are not lost.
    A link is tried at its target, which the picture will be written to."""
    target = path.resolve()
    try:
        if target.is_dir():
            return f"{what} is a folder: {path}"
        if not target.parent.is_dir():
            return f"{what} folder does not exist: {path.parent}"
        existed = target.exists()
        with open(target, "ab"):  # appends nothing to a file that is there
            pass
        if not existed:
            target.unlink()
    except OSError as error:  # no permission to look into the folder, or to write there
        return f"cannot write {what} {path}: {error.strerror or error}"
    return None


def _write(parser: argparse.ArgumentParser, path: Path, write: Callable[[], None]) -> None:
    try:
        write()
    except OSError as error:  # a full disk, or a folder gone during the run
        parser.error(f"cannot write {path}: {error.strerror or error}")


def _print_json(frame) -> None:
    print(json.dumps({"step": frame.step, "steps": frame.steps, "elapsed": round(frame.elapsed, 3),
                      "seconds_left": round(frame.seconds_left, 1), "size": list(frame.size), "losses": frame.losses,
                      "done": frame.done}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
