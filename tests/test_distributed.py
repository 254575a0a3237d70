"""Many processes, one picture (nst/distributed.py): torchrun's processes share the tiles and end with
the one-process picture; the first process alone reports and writes; a lost process ends the run in
one line and writes nothing.

Each process runs with one thread (OMP_NUM_THREADS=1), on loopback (gloo, 127.0.0.1).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import torch
from PIL import Image

from nst import distances, images, tiles

from .conftest import EXAMPLES, ROOT

CONTENT = EXAMPLES / "chelsea.jpg"
STYLE = EXAMPLES / "starry_night.jpg"
SCRIPT = ROOT / "tests" / "distributed_picture.py"
# Sharing the tiles changes only the order in which float32 adds their parts: the sums of the content,
# total variation and Gram matrices over the tiles, and the tiles' gradients. Any order lands within
# (tiles - 1) float32 roundings of the exact sum of non-negative parts (Higham, Accuracy and Stability
# of Numerical Algorithms, 4.2), so two orders differ by twice that at most; the style term and its
# gradient then magnify a Gram matrix's rounding by |G| / |G - A|. How far float32 takes one evaluation's
# gradient from float64's (epsilon, the one-process order) measures all of that on this CPU; the
# two-process order is as far from exact, so the two evaluations differ by at most 2 epsilon.
FLOAT32_ROUNDING = 2.0**-24
# Far below what a lost share (half of each sum) or a lost tile makes: a float32 error above it would hide them.
LARGEST_BOUND = 1e-3
# The finished picture: each step's rounding moves the next step's line search and a max-pooling window's
# near tie can go either way, so after a few steps it is compared by what a person would see.
MEAN_DIFFERENCE = 1 / 255  # one grey level on average
DISTANCE_DIFFERENCE = 0.02  # relative, to the photo and to the painting
ENV = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
ENV |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(_free_port()), *map(str, args)]


def test_two_processes_end_with_the_one_process_picture(tmp_path):
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    alone.mkdir()
    shared.mkdir()
    runs = [subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for command in ([sys.executable, SCRIPT, alone], _torchrun(SCRIPT, shared))]
    for run in runs:
        _, errors = run.communicate(timeout=240)
        assert run.returncode == 0, errors
    one, first, second = torch.load(alone / "rank0.pt"), torch.load(shared / "rank0.pt"), torch.load(shared / "rank1.pt")
    assert (one["processes"], first["processes"], second["processes"]) == (1, 2, 2)
    # bit for bit: every process took the same steps, from the same all-reduced evaluations
    assert torch.equal(first["picture"], second["picture"])
    assert first["float32"]["terms"] == second["float32"]["terms"]
    assert torch.equal(first["float32"]["gradient"], second["float32"]["gradient"])
    _one_evaluation_is_the_one_process_evaluation(one, first)
    _the_picture_looks_the_same(one["picture"], first["picture"])
    # The tiles were shared: each process ran fewer passes than one alone (targets are made by each).
    print(f"VGG passes {one['passes']} alone, {first['passes']} and {second['passes']} shared")
    assert first["passes"] < one["passes"] and second["passes"] < one["passes"]


def _one_evaluation_is_the_one_process_evaluation(one: dict, shared: dict) -> None:
    exact, alone, together = one["float64"], one["float32"], shared["float32"]
    epsilon = float((alone["gradient"].double() - exact["gradient"]).norm() / exact["gradient"].norm())
    bound = 2 * max(epsilon, (alone["tiles"] - 1) * FLOAT32_ROUNDING)
    gradient = float((together["gradient"].double() - alone["gradient"].double()).norm() / exact["gradient"].norm())
    terms = {name: abs(together["terms"][name] - alone["terms"][name]) / abs(value) for name, value in exact["terms"].items()}
    print(f"two processes against one, relative: gradient {gradient:.2e}, terms "
          + ", ".join(f"{name} {difference:.2e}" for name, difference in terms.items())
          + f"; bound {bound:.2e} (float32 against float64: {epsilon:.2e}, over {alone['tiles']} tiles)")
    assert bound < LARGEST_BOUND
    assert gradient <= bound and all(difference <= bound for difference in terms.values()), terms


def _the_picture_looks_the_same(alone: torch.Tensor, together: torch.Tensor) -> None:
    difference = (together - alone).abs()
    far = [distances(images.to_pil(picture), CONTENT, STYLE) for picture in (alone, together)]
    print(f"two processes' picture against one: mean difference {difference.mean():.2e}, max {difference.max():.2e}; "
          f"distances {far[0]} alone, {far[1]} shared")
    assert difference.mean() < MEAN_DIFFERENCE
    for name in ("content", "style"):
        assert abs(far[1][name] - far[0][name]) <= DISTANCE_DIFFERENCE * far[0][name], (name, far)


def test_under_torchrun_the_first_process_alone_reports_and_writes(tmp_path):
    output, timelapse = tmp_path / "out.png", tmp_path / "forming.webp"
    result = subprocess.run(_torchrun("-m", "nst", CONTENT, STYLE, "-o", output, "--timelapse", timelapse, "--size", "128",
                                      "--steps", "2", "--no-multiscale", "--frame-interval", "0", "--json"),
                            env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]  # every line one frame of one process
    assert [frame["step"] for frame in frames] == [1, 2] and frames[-1]["done"]
    # Libraries may warn; our code may not: no CLI error, no traceback, no warning from a file of nst.
    ours = [line for line in result.stderr.splitlines() if "/nst/" in line or line.startswith("python -m nst:") or "Traceback" in line]
    assert not ours, result.stderr
    assert Image.open(output).size == (128, 85) and Image.open(timelapse).n_frames >= 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["forming.webp", "out.png"]


def test_torchrun_with_tile_off_is_refused_in_one_line(tmp_path):
    result = subprocess.run(_torchrun("-m", "nst", CONTENT, STYLE, "-o", tmp_path / "out.png", "--tile", "off"),
                            env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("python -m nst:")]
    assert ours == ["python -m nst: error: tile off computes the whole picture in every process: "
                    "under torchrun, give tile auto or a side in px"]
    assert not (tmp_path / "out.png").exists()


def _processes_launched(launcher: str, arguments: list) -> list[subprocess.Popen]:
    if launcher == "torchrun":
        return [subprocess.Popen(_torchrun("-m", "nst", *arguments), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    # torch.distributed's own environment, as torchrun sets it, without torchrun's agent.
    world = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    return [subprocess.Popen([sys.executable, "-m", "nst", *map(str, arguments)], env=ENV | world | {"RANK": rank, "LOCAL_RANK": rank},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in ("0", "1")]


def _rank(process: psutil.Process) -> str | None:
    try:
        return process.environ().get("RANK")
    except psutil.Error:
        return None


@pytest.mark.parametrize("launcher", ["torchrun", "environment"])
def test_a_lost_process_ends_the_run_in_one_line_and_writes_nothing(tmp_path, launcher):
    output = tmp_path / "out.png"
    Image.new("RGB", (8, 8), "red").save(output)  # a good result from before
    good = output.read_bytes()
    launched = _processes_launched(launcher, [CONTENT, STYLE, "-o", output, "--size", "128", "--steps", "2000", "--no-multiscale",
                                              "--json"])
    speaker = launched[0]
    first_frame = speaker.stdout.readline()
    assert json.loads(first_frame)["step"] >= 1, speaker.stderr.read()
    workers = [psutil.Process(process.pid) for process in launched]
    workers += [child for worker in workers for child in worker.children(recursive=True)]
    (lost,) = [worker for worker in workers if _rank(worker) == "1"]
    lost.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    for process in launched:
        process.wait(timeout=60)
    assert time.monotonic() - killed < 60
    assert output.read_bytes() == good
    errors = speaker.stderr.read()
    ours = [line for line in errors.splitlines() if "python -m nst:" in line]
    assert len(ours) == 1 and ours[0].startswith("python -m nst: error: process 0 of 2: ") and ours[0].endswith("; nothing written"), errors
    assert "/nst/" not in errors  # no traceback through our code (torchrun prints its own)
    if launcher == "environment":  # without torchrun's agent, the survivor's own end: the CLI's code for a failure
        assert speaker.returncode == 2 and "lost another process of the run" in ours[0]


def test_shared_tiles_give_each_process_one():
    layers = {"relu1_1", "relu5_1", "relu4_2"}
    for height, width, processes, expected in ((85, 128, 2, 2), (128, 128, 4, 4), (512, 384, 3, 4), (60, 64, 2, 1)):
        plan = tiles.shared_plan(height, width, layers, processes)
        assert len(plan) == expected, (height, width, processes)
        assert plan.rows[-1] == height and plan.columns[-1] == width
