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

from nst import tiles

from .conftest import EXAMPLES, ROOT

CONTENT = EXAMPLES / "chelsea.jpg"
STYLE = EXAMPLES / "starry_night.jpg"
SCRIPT = ROOT / "tests" / "distributed_picture.py"
# The sums are added in another order, which moves the loss and gradient by float rounding; over 5 L-BFGS
# steps at 128 px (fp32, tiles of 64) that left, measured on a Xeon with AVX-512, a mean difference of
# 2.4e-6 in [0, 1] and a max of 1.4e-3, in a cluster where a max-pooling window's near tie went the other
# way (tests/test_tiles.py: kinks). One process with 2 threads instead of 1 differs from itself as much
# (mean 3.8e-6, max 1.4e-3); both grow with the steps (after 10: means 6.7e-4 and 7.8e-4).
MEAN_DIFFERENCE = 3e-5  # headroom for another CPU's kinks; one whose processes keep their sums to themselves is 7e-2 off
MAX_DIFFERENCE = 4 / 255
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
    assert torch.equal(first["picture"], second["picture"])  # bit for bit: every process took the same steps
    difference = (first["picture"] - one["picture"]).abs()
    print(f"two processes against one: max {difference.max():.2e}, mean {difference.mean():.2e}; "
          f"VGG passes {one['passes']} alone, {first['passes']} and {second['passes']} shared")
    assert difference.max() < MAX_DIFFERENCE and difference.mean() < MEAN_DIFFERENCE
    # The tiles were shared: each process ran fewer passes than one alone (targets are made by each).
    assert first["passes"] < one["passes"] and second["passes"] < one["passes"]


def test_under_torchrun_the_first_process_alone_reports_and_writes(tmp_path):
    output, timelapse = tmp_path / "out.png", tmp_path / "forming.webp"
    result = subprocess.run(_torchrun("-m", "nst", CONTENT, STYLE, "-o", output, "--timelapse", timelapse, "--size", "128",
                                      "--steps", "2", "--no-multiscale", "--frame-interval", "0", "--json"),
                            env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]  # every line one frame of one process
    assert [frame["step"] for frame in frames] == [1, 2] and frames[-1]["done"]
    assert "error" not in result.stderr and "arning" not in result.stderr
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
