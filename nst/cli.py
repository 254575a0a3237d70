"""`python -m nst CONTENT STYLE [STYLE ...] -o OUT.png`: style transfer from the command line.

Every setting's flag, type, choices and help come from its declaration in `nst.settings`. The modules
that need torch are imported once the arguments are parsed, so that --help and a refused flag answer at once.
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
from typing import TYPE_CHECKING

from .settings import Declared, Settings, SettingsError, VideoSettings, declarations

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .observers import Frame

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .video import is_video

    if is_video(args.content) or Path(args.output).suffix.lower() == ".mp4":  # a clip by its content, or a clip asked for
        from . import video_cli

        return video_cli.main_clip(parser, args, _unwritable)
    speaks = first_process()  # under torchrun, the first process alone writes and reports; the others only a failure
    if not speaks:
        warnings.simplefilter("ignore")
    check_arguments(parser, args, speaks)
    return CommandRun(parser, args, speaks).exit_code()


def add_video_flags(parser: argparse.ArgumentParser) -> None:
    section = parser.add_argument_group("a clip (when CONTENT is a video)")
    defaults = VideoSettings()
    section.add_argument("--temporal-weight", type=float, help="pull of each frame toward the previous painted frame moved along "
                         f"the optical flow: steadier, less flicker (default {defaults.temporal_weight:g}; 0: none)")
    section.add_argument("--fps", type=float, help="frames per second to keep (default: all of the clip's)")
    section.add_argument("--later-steps", type=int, help="steps of each frame after the first, which starts from the painted "
                         "frame before it (default 0: the steps of a third of a still picture's work)")



# --- The arguments ----------------------------------------------------------------------------------

def first_process() -> bool:
    """Whether this process is the one that speaks and writes: under torchrun, rank 0. Read from
    torchrun's environment, which the process group's ranks follow, so that the parser needs no torch."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block; under torchrun, from the first process alone
        self.exit(2, f"{self.prog}: error: {message}\n" if first_process() else None)


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
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue the run a checkpoint holds (a clip's: "
                        "OUT.mp4.partial), with the same images and its settings (a flag that changes the picture is refused; "
                        "where and how fast it runs may change)")
    add_video_flags(parser)
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, speaks: bool) -> None:
    """Refuse, through `parser.error`, what the settings' declarations do not cover: the outputs'
    names and folders, and flags that do not go together. Before the run, so that its minutes are not lost."""
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


def _unwritable(path: Path, what: str) -> str | None:
    """Why `path` cannot be written, or None. A link is tried at its target, which the picture will be written to."""
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


# --- The settings -----------------------------------------------------------------------------------

def settings_for(args: argparse.Namespace) -> tuple[Settings, Checkpoint | None]:
    """The run's validated settings, and the checkpoint it resumes (or None): the flags given, over a
    checkpoint's settings (--resume), a picture's (--settings-from), or the defaults."""
    from .checkpoint import Checkpoint
    from .provenance import settings_from_picture

    given = {declared.name: getattr(args, declared.name) for declared in declarations() if getattr(args, declared.name) is not None}
    if args.save_every:
        given.setdefault("frame_interval", 0.0)
    resumed = Checkpoint.load(args.resume) if args.resume else None
    if resumed is not None:
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
    return settings, resumed


def _check_same_picture(resumed: Checkpoint, settings: Settings, path: str) -> None:
    """CheckpointError unless the command line asks for the picture the checkpoint was making: as
    many style images, and its settings (flags may repeat them, or change where and how fast it runs)."""
    from .checkpoint import CheckpointError

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


def _check_for_processes(settings: Settings) -> None:
    """What a run shared among torchrun's processes cannot take."""
    if settings.tile == "off":
        raise SettingsError("tile off computes the whole picture in every process: under torchrun, give tile auto or a side in px")
    if settings.device.startswith("cuda:"):
        raise SettingsError(f"device {settings.device} under torchrun: give auto or cuda; each process takes the GPU of its local rank")


# --- The run ----------------------------------------------------------------------------------------

class CommandRun:
    """One run of the command: the loop and its observers, the outputs, and how it ends as an exit code."""

    def __init__(self, parser: argparse.ArgumentParser, args: argparse.Namespace, speaks: bool):
        self.parser, self.args, self.speaks = parser, args, speaks
        self.output = Path(args.output)
        self.checkpoint_path = self.output.with_name(f"{self.output.name}.ckpt") if args.checkpoint_every else None
        self.progress = ProgressBar()  # made at the first frame, so that a refusal before it stays one line
        self.frame: Frame | None = None  # the last frame seen
        self.timelapse = None

    def exit_code(self) -> int:
        """Run, write the outputs and say how it ended: 0 done, 1 stopped early, 2 refused or a process lost, 130 interrupted."""
        from . import distributed
        from .checkpoint import CheckpointError
        from .images import ImageError
        from .weights import WeightsError

        try:
            settings = self.loop()
        except (ImageError, SettingsError, WeightsError, CheckpointError) as error:
            self.parser.error(str(error))
        except distributed.WorldError as error:  # nothing is written: the picture is not the whole run's
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # this line is the one said; torchrun's SIGTERM may follow
            self.progress.close()
            print(f"{self.parser.prog}: error: process {distributed.rank()} of {distributed.world_size()}: {error}; nothing written",
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt as interrupt:
            self.progress.close()
            if self.speaks:
                print(self.interrupted(interrupt), file=sys.stderr)
            return 130
        finally:
            self.progress.close()
            if distributed.launched():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the one line would say nothing was written
                distributed.stop()
        return self.write_outputs(settings) if self.speaks else 0

    def loop(self) -> Settings:
        """The run, from its settings to its last frame, each frame shown to the observers in turn."""
        from .checkpoint import interrupts_wait_for_steps
        from .engine import stylize
        from .timelapse import Timelapse

        settings, resumed = settings_for(self.args)
        content, styles, mask = self.start(settings)
        self.timelapse = Timelapse() if self.args.timelapse else None
        if self.checkpoint_path is not None and self.speaks and self.checkpoint_path.exists() and not self.args.resume:
            print(f"note: {self.checkpoint_path} holds an interrupted run; this run replaces it (continue that one with --resume)",
                  file=sys.stderr)
        observers = self.observers()
        with interrupts_wait_for_steps():
            for frame in stylize(content, styles, settings, mask=mask, resume=resumed):
                self.frame = frame
                if self.speaks:  # only the first of torchrun's processes writes and prints
                    for observe in observers:
                        observe(frame)
        return settings

    def start(self, settings: Settings) -> tuple:
        """Join torchrun's processes if launched by it, set the memory policy, and open the images: content, styles, mask."""
        from . import distributed
        from .images import open_image, open_mask
        from .devices import resolve_device
        from .memory import use_memory_policy

        if distributed.launched():
            _check_for_processes(settings)
            distributed.start(resolve_device(settings.device))
            signal.signal(signal.SIGTERM, partial(_ended_by_torchrun, self.parser.prog, self.speaks))
        use_memory_policy(settings.size, settings.tile)
        content = open_image(self.args.content, "content image")
        styles = [open_image(path, "style image") for path in self.args.styles]
        mask = open_mask(self.args.mask) if self.args.mask else None
        return content, styles, mask

    def observers(self) -> list[Callable[[Frame], None]]:
        """What each frame is shown to, in this order: checkpoints, timelapse, step pictures, progress bar, JSON lines."""
        observers: list[Callable[[Frame], None]] = []
        if self.checkpoint_path:
            observers.append(PeriodicCheckpoints(self.checkpoint_path, self.args.checkpoint_every).observe)
        if self.timelapse:
            observers.append(lambda frame: self.timelapse.add(frame.image))
        if self.args.save_every:
            observers.append(partial(self.save_step_picture, every=self.args.save_every))
        observers.append(self.progress.observe)
        if self.args.json:
            observers.append(print_json)
        return observers

    def save_step_picture(self, frame: Frame, every: int) -> None:
        if frame.step % every == 0 and not frame.done:
            step_path = self.output.with_name(f"{self.output.stem}-step{frame.step}.png")
            self.write(step_path, partial(frame.image.save, step_path))

    def write_outputs(self, settings: Settings) -> int:
        """Write the picture and the timelapse; drop the checkpoint, since the run has ended. 1 if it stopped early."""
        from .provenance import save_png

        frame, output = self.frame, self.output
        if OUTPUT_FORMATS[output.suffix.lower()] == "PNG":
            self.write(output, partial(save_png, frame.image, output, settings))
        else:
            self.write(output, partial(frame.image.save, output, OUTPUT_FORMATS[output.suffix.lower()]))
        if self.timelapse:
            self.timelapse.finish(frame.image)
            self.write(Path(self.args.timelapse), partial(self.timelapse.save, self.args.timelapse))
        if self.checkpoint_path is not None:  # nothing is left to resume
            self.checkpoint_path.unlink(missing_ok=True)
        if frame.message:
            print(f"stopped early: {frame.message}; wrote {output}", file=sys.stderr)
            return 1
        return 0

    def write(self, path: Path, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as error:  # a full disk, or a folder gone during the run
            self.parser.error(f"cannot write {path}: {error.strerror or error}")

    def interrupted(self, interrupt: KeyboardInterrupt) -> str:
        """Save the checkpoint of an interrupted run; the line that says where it is and how to go on."""
        from .checkpoint import CheckpointError, Interrupted

        path, args, frame = self.checkpoint_path, self.args, self.frame
        if path is None:
            return "interrupted"
        try:
            if isinstance(interrupt, Interrupted):  # in the run: its checkpoint is the last finished step's
                if interrupt.checkpoint is None:
                    kept = f"; {args.resume} is as it was" if args.resume else ""
                    return f"interrupted before a step had finished: no checkpoint saved{kept}"
                interrupt.checkpoint.save(path)
                step = interrupt.checkpoint.step
            elif frame is not None and not frame.done:  # while the run was paused at a frame
                frame.save_checkpoint(path)
                step = frame.step
            else:
                return "interrupted"
        except (OSError, CheckpointError) as error:
            return f"interrupted; no checkpoint saved: {getattr(error, 'strerror', None) or error}"
        except KeyboardInterrupt:  # a second Ctrl-C while saving: the last whole checkpoint, if any, stays
            return "interrupted again while saving: no checkpoint saved"
        command = [args.content, *args.styles, "-o", args.output, *(["--mask", args.mask] if args.mask else []), "--resume", str(path)]
        return f"interrupted after step {step}; saved {path}; to continue: {program_name()} {shlex.join(command)}"


# --- The observers ----------------------------------------------------------------------------------

class ProgressBar:
    """tqdm's bar on stderr, made at the first frame: steps done, the scale's size, time left and the loss."""

    def __init__(self):
        self.bar = None

    def observe(self, frame: Frame) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=frame.steps, unit="step", file=sys.stderr, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        self.bar.update(frame.step - self.bar.n)
        self.bar.set_postfix_str(f"{frame.size[1]}x{frame.size[0]}, ~{frame.seconds_left:.0f} s left, loss {frame.losses['total']:.4g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class PeriodicCheckpoints:
    """Saves the run to `path` every `seconds`, at a frame; one that cannot be written costs a line, not the run."""

    def __init__(self, path: Path, seconds: float):
        self.path, self.seconds = path, seconds
        self.due = time.monotonic() + seconds

    def observe(self, frame: Frame) -> None:
        if frame.done or time.monotonic() < self.due:
            return
        from tqdm import tqdm

        from .checkpoint import CheckpointError

        try:
            frame.save_checkpoint(self.path)
        except (OSError, CheckpointError) as error:
            tqdm.write(f"could not save the checkpoint {self.path}: {getattr(error, 'strerror', None) or error}", file=sys.stderr)
        self.due = time.monotonic() + self.seconds


def print_json(frame: Frame) -> None:
    print(json.dumps({"step": frame.step, "steps": frame.steps, "elapsed": round(frame.elapsed, 3),
                      "seconds_left": round(frame.seconds_left, 1), "size": list(frame.size), "losses": frame.losses,
                      "done": frame.done}), flush=True)


def _ended_by_torchrun(program: str, speaks: bool, *_) -> None:
    """torchrun ends every process with SIGTERM when one of them fails: one line rather than a silent end."""
    from . import distributed

    after_the_progress_bar = "\n" if speaks else ""
    print(f"{after_the_progress_bar}{program}: error: process {distributed.rank()} of {distributed.world_size()}: ended by SIGTERM "
          "(torchrun ends all the processes when one fails); nothing written", file=sys.stderr, flush=True)
    os._exit(2)
