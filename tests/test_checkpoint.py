import json
import re
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from PIL import Image

from nst import Settings, cli, engine, stylize
from nst.checkpoint import Checkpoint, CheckpointError, Interrupted, interrupts_wait_for_steps, marks_its_update, step_finished
from nst.vgg import VGG19Features

from .conftest import EXAMPLES, ROOT

CONTENT = str(EXAMPLES / "chelsea.jpg")
STYLE = str(EXAMPLES / "starry_night.jpg")
OTHER_STYLE = str(EXAMPLES / "graf1.jpg")
# Two scales, 128 then 160 px (chelsea is 3:2), of 4 and 2 steps.
TWO_SCALES = Settings(size=160, steps=6, frame_interval=0.0)


def _run(content, style, settings, resume=None):
    """The frames of a run and its picture as optimised after the last step (float32, before any display)."""
    final = {}

    def keep(step, picture):
        if step == settings.steps:
            final["picture"] = picture.clone()

    frames = list(stylize(content, style, settings, on_step=keep, resume=resume))
    return frames, final["picture"]


@pytest.mark.parametrize("optimizer, stops", [("lbfgs", (2, 4, 5)), ("adam", (5,))])
def test_a_resumed_run_makes_the_uninterrupted_runs_picture(content, style, tmp_path, optimizer, stops):
    # stopped in the first scale, exactly at the end of the first scale (step 4), and in the second
    settings = replace(TWO_SCALES, optimizer=optimizer)
    saved, whole = {}, []
    for frame in stylize(content, style, settings, on_step=lambda step, picture: whole.append(picture.clone())):
        if frame.step in stops:
            saved[frame.step] = tmp_path / f"step{frame.step}.ckpt"
            frame.save_checkpoint(saved[frame.step])
    final = whole[-1]
    assert sorted(saved) == list(stops)
    for stop, path in saved.items():
        checkpoint = Checkpoint.load(path)
        assert checkpoint.step == stop and checkpoint.scale == (0 if stop <= 4 else 1)
        frames, resumed = _run(content, style, settings, resume=path)
        # Deterministic on CPU: the same picture to the bit (measured: max abs difference 0.0).
        print(f"{optimizer}, resumed from step {stop}: max abs difference {float((resumed - final).abs().max()):.3g}")
        assert torch.equal(resumed, final)
        assert [frame.step for frame in frames] == list(range(stop + 1, 7)) and {frame.steps for frame in frames} == {6}
        assert frames[0].elapsed > checkpoint.elapsed  # the elapsed time goes on from the checkpoint's
        assert frames[-1].done and frames[-1].seconds_left == 0 and all(frame.seconds_left > 0 for frame in frames[:-1])
        assert frames[-1].size == (106, 160)


class _CtrlC:
    """Ctrl-C, pressed once as the terminal sends it (SIGINT, through the handler a program installs) at a
    chosen point of a run: between steps 2 and 3, in step 3's evaluation (at its first VGG pass) or in
    step 3's update (as its evaluation returns). Raised in the run itself, it can neither miss it nor
    come after it."""

    def __init__(self, where: str):
        self.where, self.steps, self.pressed = where, 0, False

    def after_step(self, step: int, picture) -> None:
        self.steps = step
        self.press_if("between steps")

    def press_if(self, where: str) -> None:
        if where == self.where and self.steps == 2 and not self.pressed:
            self.pressed = True
            signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("where, finished", [("between steps", 2), ("in an evaluation", 2), ("in an update", 3)])
def test_ctrl_c_in_a_run_raises_interrupted_with_a_checkpoint_that_resumes_it(content, style, tmp_path, monkeypatch, where, finished):
    settings = replace(TWO_SCALES, size=64, steps=6, frame_interval=3600)  # a frame only at the end: the interrupt lands in the run
    _, whole = _run(content, style, settings)
    ctrl_c = _CtrlC(where)
    network_pass, marks_the_update = VGG19Features.forward, engine.marks_its_update

    def pressing_in_the_pass(*args, **kwargs):  # instrumentation: the real pass runs
        ctrl_c.press_if("in an evaluation")
        return network_pass(*args, **kwargs)

    def pressing_as_the_update_starts(closure):  # instrumentation: the engine's own marked evaluation runs
        evaluate = marks_the_update(closure)

        def evaluate_and_press():
            total = evaluate()
            ctrl_c.press_if("in an update")
            return total
        return evaluate_and_press

    monkeypatch.setattr(VGG19Features, "forward", pressing_in_the_pass)
    monkeypatch.setattr(engine, "marks_its_update", pressing_as_the_update_starts)
    try:
        with interrupts_wait_for_steps(), pytest.raises(Interrupted) as interrupted:
            for _ in stylize(content, style, settings, on_step=ctrl_c.after_step):
                pass
    except KeyboardInterrupt:  # a bare one, not Interrupted: failed here rather than ending the whole session
        pytest.fail(f"Ctrl-C {where} came out of the run as a bare KeyboardInterrupt")
    monkeypatch.undo()
    checkpoint = interrupted.value.checkpoint
    assert ctrl_c.pressed and checkpoint is not None and checkpoint.step == finished  # an update waits for its step's end
    checkpoint.save(tmp_path / "run.ckpt")
    frames, resumed = _run(content, style, settings, resume=tmp_path / "run.ckpt")
    assert frames[-1].step == 6 and torch.equal(resumed, whole)


def test_a_checkpoint_resumes_only_the_same_images_and_settings(content, style, second_style, tmp_path):
    path = tmp_path / "run.ckpt"
    for frame in stylize(content, style, replace(TWO_SCALES, size=64, steps=3)):
        if frame.step == 1:
            frame.save_checkpoint(path)
    mask = Image.new("L", content.size, 255)
    for images, settings, message in (((content, second_style, None), replace(TWO_SCALES, size=64, steps=3), "other images"),
                                      ((content, style, mask), replace(TWO_SCALES, size=64, steps=3), "other images"),
                                      ((content, style, None), replace(TWO_SCALES, size=64, steps=4), "other settings (steps)"),
                                      ((content, style, None), replace(TWO_SCALES, size=64, steps=3, seed=2), "other settings (seed)")):
        with pytest.raises(CheckpointError, match=re.escape(message)):
            next(stylize(images[0], images[1], settings, mask=images[2], resume=path))
    # where and how fast it runs may change
    frames = list(stylize(content, style, replace(TWO_SCALES, size=64, steps=3, frame_interval=3600, winograd="off"), resume=path))
    assert [frame.step for frame in frames] == [2, 3]


def test_a_frame_saves_its_checkpoint_only_while_the_run_is_paused_at_it(content, style, tmp_path):
    run = stylize(content, style, replace(TWO_SCALES, size=64, steps=3))
    first = next(run)
    next(run)
    with pytest.raises(CheckpointError, match="gone on from step 1"):
        first.save_checkpoint(tmp_path / "late.ckpt")
    last = next(run)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        last.save_checkpoint(tmp_path / "done.ckpt")
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_is_written_whole_and_never_over_a_picture(content, style, tmp_path):
    picture = tmp_path / "out.png"
    Image.new("RGB", (8, 8), "red").save(picture)
    before = picture.read_bytes()
    run = stylize(content, style, replace(TWO_SCALES, size=64, steps=3))
    frame = next(run)
    with pytest.raises(CheckpointError, match="is not a checkpoint: not written over"):
        frame.save_checkpoint(picture)
    assert picture.read_bytes() == before
    frame.save_checkpoint(tmp_path / "out.png.ckpt")
    frame.save_checkpoint(tmp_path / "out.png.ckpt")  # over an older checkpoint
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.png", "out.png.ckpt"]  # no temporary file left
    run.close()


def test_an_interrupt_during_an_update_waits_for_the_steps_end():
    evaluate = marks_its_update(lambda: torch.zeros(()))
    with interrupts_wait_for_steps():
        evaluate()  # the closure has returned: the optimiser updates its state
        try:
            signal.raise_signal(signal.SIGINT)
            sum(range(1000))  # Python code runs on: the interrupt waits
        except KeyboardInterrupt:
            pytest.fail("an interrupt during the update was raised at once")
        with pytest.raises(KeyboardInterrupt):
            step_finished()
        step_finished()  # raised once
        with pytest.raises(KeyboardInterrupt):  # between steps it is raised at once
            signal.raise_signal(signal.SIGINT)
            sum(range(1000))


# ---- the command line


def nst_process(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "nst", *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_ctrl_c_saves_a_checkpoint_and_resume_makes_the_uninterrupted_picture(tmp_path):
    common = [CONTENT, STYLE, "--size", "64", "--steps", "12", "--json", "--frame-interval", "0"]
    whole, parted = tmp_path / "whole.png", tmp_path / "parted.png"
    # Uninterrupted, saving a checkpoint at every frame: it is there during the run, and gone at its end.
    process = nst_process(*common, "-o", whole, "--checkpoint-every", "0.000001")
    first = json.loads(process.stdout.readline())
    assert Checkpoint.load(tmp_path / "whole.png.ckpt").step >= first["step"] == 1
    process.communicate(timeout=300)
    assert process.returncode == 0 and whole.exists() and not (tmp_path / "whole.png.ckpt").exists()

    process = nst_process(*common, "-o", parted)
    assert json.loads(process.stdout.readline())["step"] == 1
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    line = stderr.strip().splitlines()[-1]
    checkpoint = tmp_path / "parted.png.ckpt"
    assert line.startswith("interrupted after step ") and f"saved {checkpoint}; to continue: python -m nst " in line, stderr
    assert not parted.exists()
    stopped = Checkpoint.load(checkpoint).step
    assert 1 <= stopped < 12 and line.startswith(f"interrupted after step {stopped};")
    command = shlex.split(line.partition("to continue: ")[2])
    assert command[:3] == ["python", "-m", "nst"] and command[-2:] == ["--resume", str(checkpoint)]
    process = nst_process(*command[3:], "--json")
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    frames = [json.loads(line) for line in stdout.splitlines()]
    assert frames[0]["step"] == stopped + 1 and frames[-1]["step"] == 12 and frames[-1]["done"]
    assert "12/12" in stderr  # the progress bar
    assert Image.open(parted).tobytes() == Image.open(whole).tobytes()
    assert not checkpoint.exists()  # the finished run deleted it


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    """A checkpoint of chelsea + starry night at 64 px, 3 steps, taken after step 1."""
    path = tmp_path_factory.mktemp("checkpoint") / "out.png.ckpt"
    for frame in stylize(CONTENT, STYLE, Settings(size=64, steps=3, frame_interval=0)):
        if frame.step == 1:
            frame.save_checkpoint(path)
    return path


def _other_version(path):
    document = torch.load(path, weights_only=True)
    document["version"] = "0.0.1"
    other = path.with_name("old.ckpt")
    torch.save(document, other)
    return other


@pytest.mark.parametrize("arguments, message", [
    (lambda ckpt: [CONTENT, STYLE, "--resume", ckpt.with_name("missing.ckpt")], "checkpoint not found: "),
    (lambda ckpt: [CONTENT, STYLE, "--resume", CONTENT], "chelsea.jpg is not a checkpoint"),
    (lambda ckpt: [CONTENT, STYLE, "--resume", _other_version(ckpt)], "old.ckpt was saved by nst 0.0.1 and this is nst "),
    (lambda ckpt: [CONTENT, OTHER_STYLE, "--resume", ckpt], "the checkpoint was made from other images"),
    (lambda ckpt: [CONTENT, STYLE, OTHER_STYLE, "--resume", ckpt], "out.png.ckpt was made with 1 style image(s), not 2"),
    (lambda ckpt: [CONTENT, STYLE, "--resume", ckpt, "--size", "96", "--steps", "3"],
     "out.png.ckpt continues with its own settings; these flags change them: --size (the checkpoint's: 64)"),
    (lambda ckpt: [CONTENT, STYLE, "--resume", ckpt, "--settings-from", CONTENT], "--settings-from does not apply with --resume"),
], ids=["missing", "not-a-checkpoint", "other-version", "other-style", "more-styles", "other-settings", "settings-from"])
def test_a_refused_resume_is_one_line_and_writes_nothing(tmp_path, capsys, checkpoint_file, arguments, message):
    output = tmp_path / "out.png"
    Image.new("RGB", (8, 8), "red").save(output)  # a good result from before
    saved_output, saved_checkpoint = output.read_bytes(), checkpoint_file.read_bytes()
    with pytest.raises(SystemExit) as exit:
        cli.main([*map(str, arguments(checkpoint_file)), "-o", str(output)])
    assert exit.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line, line
    assert output.read_bytes() == saved_output and checkpoint_file.read_bytes() == saved_checkpoint
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.png"]


def test_a_refused_resume_in_a_real_process_is_its_only_line(tmp_path, checkpoint_file):
    process = nst_process(CONTENT, OTHER_STYLE, "-o", tmp_path / "out.png", "--resume", checkpoint_file)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2
    assert stderr.strip().splitlines() == ["python -m nst: error: the checkpoint was made from other images: "
                                           "give the same content, style and mask images to resume it"]
