"""Checkpoints: a run's picture, optimiser state, settings, scale and step in one file, to resume it.

A checkpoint is resumed only by the same version of this program and with the same images (their
decoded pixels' fingerprint); it then reaches the picture the run would have reached uninterrupted.
Files are written whole or not at all (a temporary file beside, then renamed over), never over a
file that is not a checkpoint, and read with `torch.load(weights_only=True)`: tensors, dicts,
lists, text and numbers only, so a file cannot run code.

An interrupt (Ctrl-C) that arrives while an optimiser updates its state would leave it torn: under
`interrupts_wait_for_steps` (for a program's main thread) it waits for the step's end instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from .version import __version__
from .settings import Settings, SettingsError, declarations

FORMAT = "nst-checkpoint"
_ZIP_MAGIC = b"PK\x03\x04"  # how every file torch.save writes begins


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or resumed here; the message is one line meant for a person."""


@dataclass
class Checkpoint:
    """A run as of a finished step. `picture` is the picture being optimised at scale `scale` (an
    index into the run's schedule) after `step` steps of the whole run; `optimizer` is the
    optimiser's `state_dict()`. Taken from a running generator, the tensors are the run's own, not
    copies (a copy of L-BFGS's history would double the memory of a large picture): save it before
    the run goes on."""

    settings: Settings
    fingerprint: str
    scale: int
    step: int
    elapsed: float
    picture: Tensor
    optimizer: dict
    style_count: int = 1
    version: str = __version__

    def save(self, path: str | os.PathLike) -> None:
        """Write the checkpoint to `path` atomically: a crash leaves the previous file or none, never half of one.
        A file there that is not a checkpoint (a picture) is not written over: CheckpointError."""
        path = Path(path)
        if path.is_dir() or path.exists() and not _looks_like_checkpoint(path):
            raise CheckpointError(f"{path} exists and is not a checkpoint: not written over")
        document = {"format": FORMAT, "version": self.version, "settings": json.dumps(asdict(self.settings)),
                    "style_count": self.style_count, "fingerprint": self.fingerprint, "scale": self.scale, "step": self.step,
                    "elapsed": self.elapsed, "picture": self.picture.detach(), "optimizer": self.optimizer}
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(document, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:  # an interrupt or a full disk: no temporary file left behind
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> Checkpoint:
        """The checkpoint at `path` (tensors on the CPU), or CheckpointError: missing, not a
        checkpoint, from another version of this program, or with settings not usable here."""
        path = Path(path)
        if path.is_dir():
            raise CheckpointError(f"checkpoint {path} is a folder")
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        document = read_document(path, FORMAT, "a checkpoint", path, "run")
        try:
            style_count = document["style_count"]
            settings = saved_settings(document["settings"], style_count)
            checkpoint = cls(settings, str(document["fingerprint"]), int(document["scale"]), int(document["step"]),
                             float(document["elapsed"]), document["picture"], dict(document["optimizer"]), int(style_count))
        except SettingsError as error:
            raise CheckpointError(f"{path}: its settings are not usable here: {error}") from error
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path} is damaged: {error}") from error
        if not (isinstance(checkpoint.picture, Tensor) and checkpoint.picture.dim() == 4 and checkpoint.picture.shape[1] == 3):
            raise CheckpointError(f"{path} is damaged: it holds no picture")
        return checkpoint

    def check_resumes(self, settings: Settings, fingerprint: str) -> None:
        """CheckpointError unless a run with `settings` (validated) and images of `fingerprint`
        continues this checkpoint: the same images, and the same settings for the picture."""
        if fingerprint != self.fingerprint:
            raise CheckpointError("the checkpoint was made from other images: give the same content, style and mask images to resume it")
        changed = [declared.name for declared in declarations() if declared.declaration.group == "picture"
                   and getattr(settings, declared.name) != getattr(self.settings, declared.name)]
        if changed:
            raise CheckpointError(f"the checkpoint was made with other settings ({', '.join(changed).replace('_', ' ')}): "
                                  "resume it with its own")
        if self.step >= settings.steps:
            raise CheckpointError("the checkpoint's run had finished: nothing to resume")


def read_document(path: Path, format: str, kind: str, shown: Path, run: str) -> dict:
    """The saved document at `path` in `format` by this version of nst, or CheckpointError: not `kind`,
    or saved by another version (named at `shown`: start the `run` again)."""
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file it cannot read
        raise CheckpointError(f"{path} is not {kind}") from error
    if not isinstance(document, dict) or document.get("format") != format:
        raise CheckpointError(f"{path} is not {kind}")
    if document.get("version") != __version__:
        raise CheckpointError(f"{shown} was saved by nst {document.get('version')} and this is nst {__version__}: "
                              f"start the {run} again")
    return document


def saved_settings(text: str, style_count: int) -> Settings:
    """The settings a checkpoint saved as JSON; SettingsError where the picture's are not usable here.
    Those of where it runs (a device this machine may lack) are checked when the run starts, after
    the command line has had its say."""
    values = json.loads(text)
    shaping = {declared.name for declared in declarations() if declared.declaration.group == "picture"}
    settings = Settings.from_values(style_count, **{name: value for name, value in values.items() if name in shaping})
    return replace(settings, **{name: tuple(value) if isinstance(value, list) else value
                                for name, value in values.items() if name not in shaping})


def fingerprint(content: Image.Image, styles: Sequence[Image.Image], mask: Image.Image | None) -> str:
    """sha256 of the decoded images' pixels, each with its role: which pictures a run was made from."""
    digest = hashlib.sha256()
    for role, image in [("content", content), *(("style", style) for style in styles), *([("mask", mask)] if mask is not None else [])]:
        digest.update(f"{role} {image.mode} {image.width}x{image.height}\n".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def _looks_like_checkpoint(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    except OSError:
        return False


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run. `checkpoint` holds the run as of its last finished step, or is None
    where there is none (before the first step, or an interrupt that tore a step's update)."""

    def __init__(self, checkpoint: Checkpoint | None):
        super().__init__()
        self.checkpoint = checkpoint


class _StepUpdate(threading.local):
    updating = False  # the optimiser is updating the picture and its state: they are torn until the step ends
    interrupted = False  # an interrupt waits for the step's end


_step_update = _StepUpdate()


def marks_its_update(closure: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """`closure`, for an optimiser's step: once it returns, the optimiser updates the picture and
    its own state, until `step_finished` says the step is whole."""

    def evaluate() -> Tensor:
        _step_update.updating = _step_update.interrupted = False  # what a step that failed with an error left
        total = closure()
        _step_update.updating = True
        return total

    return evaluate


def step_finished() -> None:
    """The picture and the optimiser's state are a finished step's again: an interrupt that waited is raised now."""
    _step_update.updating = False
    if _step_update.interrupted:
        _step_update.interrupted = False
        raise KeyboardInterrupt


def step_torn() -> bool:
    """Whether this thread was interrupted in the middle of a step's update; clears the mark."""
    torn, _step_update.updating, _step_update.interrupted = _step_update.updating, False, False
    return torn


@contextlib.contextmanager
def interrupts_wait_for_steps() -> Iterator[None]:
    """In a program's main thread: Ctrl-C during an optimiser's update is raised at the step's end
    (a second one at once). Elsewhere it is raised at once, as always. Process-wide: the program decides."""

    def on_interrupt(signum, frame) -> None:
        if _step_update.updating and not _step_update.interrupted:
            _step_update.interrupted = True
            return
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

