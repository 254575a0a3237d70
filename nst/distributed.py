"""Many processes, one picture: the few torch.distributed helpers that `torchrun -m nst` needs.

torchrun starts the processes and sets their environment (RANK, WORLD_SIZE, MASTER_ADDR...); each
process runs the whole loop on the whole picture and evaluates only its share of the tiles
(`nst.objective`), whose sums and gradient are all-reduced, so every process holds the same loss and
gradient and takes the same optimiser step. Without torchrun (or with one process) nothing here
does anything. docs/speed.md, Several processes, says more.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

# How long a process waits for the others at a collective before it gives up. They wait for each
# other every step: for the slowest tile, and for the first process writing a frame; a lost peer's
# closed connection is noticed at once, this bounds the wait on one that hangs.
TIMEOUT = timedelta(minutes=5)

T = TypeVar("T")


class WorldError(Exception):
    """A process of the run was lost, never came, or did not answer in time."""


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: the process group's, or before it starts, the one torchrun gave it."""
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def first() -> bool:
    """Whether this process is the one that speaks and writes (rank 0)."""
    return rank() == 0


@contextmanager
def _collective(what: str):
    try:
        yield
    except RuntimeError as error:  # DistBackendError, DistNetworkError, DistStoreError and gloo's own are all RuntimeErrors
        raise WorldError(f"{what}: {_first_sentence(error)}") from error


def _first_sentence(error: Exception) -> str:
    """gloo's "[.../pair.cc:561] Connection closed by peer [127.0.0.1]:10651. This is typically..." as its first sentence."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(error).split())) or type(error).__name__
    return text.split(". ")[0][:160]


def start(device: torch.device) -> None:
    """Join torchrun's process group: gloo for CPU tensors, and on CUDA NCCL for the GPU's, each process on
    the GPU of its local rank."""
    if not launched() or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    with _collective("the processes of the run did not all start"):
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
        dist.all_reduce(torch.zeros(1))  # every process has come: a later failure is a lost one


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(items: Iterable[T]) -> Sequence[T]:
    """This process's share of `items`: the k-th to rank k mod the number of processes."""
    items = list(items)
    return items[rank()::world_size()] if active() else items


def all_reduce(tensors: Iterable[Tensor]) -> None:
    """Each tensor, in place, becomes its sum over the processes (the same tensors, in the same order, on each)."""
    if not active():
        return
    with _collective("lost another process of the run"):
        for work in [dist.all_reduce(tensor, async_op=True) for tensor in tensors]:
            work.wait()


def broadcast(tensors: Iterable[Tensor]) -> None:
    """Each tensor, in place, becomes the first process's."""
    if not active():
        return
    with _collective("lost another process of the run"):
        for work in [dist.broadcast(tensor, 0, async_op=True) for tensor in tensors]:
            work.wait()


def agreed(flag: bool) -> bool:
    """The first process's `flag`, on every process: for a choice that rests on its clock."""
    if not active():
        return flag
    value = torch.tensor([int(flag)])  # on the CPU, by gloo: no wait on the GPU
    with _collective("lost another process of the run"):
        dist.broadcast(value, 0)
    return bool(value)
