"""Where and how fast a picture is computed: device and precision, Winograd's choice, CUDA graphs,
and the process's allocator policy. None of it changes what the method computes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .settings import Settings, SettingsError

# Above this long side memory comes first on CPU (docs/method.md): `use_memory_policy` keeps fewer
# freed blocks for reuse (none with `tile` off, which also leaves Winograd's convolutions out: their
# transformed filters are large), and the engine hands freed memory back between such scales.
LARGE_PICTURE = 768
# Up to this long side a run in tiles keeps every freed block all the same: a 2048 px step took 8.6 s
# so against 9.2 s, in 3.4 GB; at 4096 px a heap that kept every block grew past 6 GB.
KEPT_TILED_PICTURE = 2048
# Scales with at least this many steps on CUDA run each step as one replayed CUDA graph.
CUDA_GRAPH_MIN_STEPS = 10


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32" or "bf16"
    winograd: bool  # the wide convolutions by Winograd's algorithm (CPU, fp32)
    cuda_graphs: bool

    @classmethod
    def for_settings(cls, settings: Settings) -> Runtime:
        device = resolve_device(settings.device)
        precision = resolve_precision(settings.precision, device)
        winograd = device.type == "cpu" and precision == "fp32" and (
            settings.winograd == "on" or settings.winograd == "auto" and (settings.tile != "off" or settings.size <= LARGE_PICTURE))
        return cls(device, precision, winograd, settings.cuda_graphs and device.type == "cuda")

    def autocast(self) -> torch.autocast:
        # No cast cache: CUDA graphs cannot capture it, and frozen weights are cast each pass anyway.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16", cache_enabled=False)

    def prepare(self) -> None:
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def accelerated(self, closure: Callable[[], Tensor], steps: int, capturable: bool = True) -> Callable[[], Tensor]:
        """The closure as one replayed CUDA graph, where that pays (see `replayed`)."""
        return replayed(closure) if capturable and self.cuda_graphs and steps >= CUDA_GRAPH_MIN_STEPS else closure


def available_devices() -> list[str]:
    """The devices this machine has, as `--device` takes them: cpu, then cuda:0 ..., then mps."""
    devices = ["cpu"] + [f"cuda:{index}" for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    return devices + (["mps"] if torch.backends.mps.is_available() else [])


def resolve_device(name: str) -> torch.device:
    """The torch device `name` means on this machine, or SettingsError: validation checks it here, and the runtime runs on it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise SettingsError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from error
    here = available_devices()
    index = device.index or 0
    if not any(present.split(":")[0] == device.type and int(present.partition(":")[2] or 0) == index for present in here):
        raise SettingsError(f"device {name!r} is not available here; this machine has {', '.join(here)} (or use auto)")
    return device


# oneDNN's instruction sets below AVX512_CORE_BF16, as ONEDNN_MAX_CPU_ISA names them
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX, and oneDNN allowed to use them: bf16 convolutions that run faster than fp32.

    torch.backends.cpu.get_cpu_capability() says only AVX2 or AVX512, and AVX-512 without these
    instructions emulates bf16, slower than fp32; torch.cpu's own checks tell them apart. With
    ONEDNN_MAX_CPU_ISA below them, oneDNN emulates bf16 even where the CPU has them (docs/method.md,
    Precision). ATEN_CPU_CAPABILITY leaves oneDNN's convolutions as they are.
    """
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    if limit in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def replayed(closure: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """The closure captured once as a CUDA graph: each later call replays all of its kernels at once.

    A step is about a thousand small kernels, and launching them one by one from Python can take
    longer than running them on a fast GPU. The graph reads the image and writes its gradient
    and the loss terms where the capture put them, so the optimiser keeps working in place.
    """
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        for _ in range(2):  # warm up outside the capture: cuDNN's autotuning, the allocator's pools
            closure()
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            total = closure()
    except RuntimeError as error:  # an op this torch build cannot capture: run step by step instead
        warnings.warn(f"CUDA graph capture failed, stepping without it: {error}", stacklevel=2)
        return closure

    def replay() -> Tensor:
        graph.replay()
        return total

    return replay


def use_memory_policy(size: int, tile: str = "auto") -> None:
    """The allocator policy for a process that makes pictures of this long side: freed memory kept for
    the next step up to LARGE_PICTURE, and in tiles up to KEPT_TILED_PICTURE; above, blocks up to 32 MB
    kept (`reuse_small_blocks`), or, with `tile` off, none (`limit_heap_growth`)."""
    if size <= LARGE_PICTURE or size <= KEPT_TILED_PICTURE and tile != "off":
        reuse_freed_memory()
    elif tile == "off":
        limit_heap_growth()
    else:
        reuse_small_blocks()


def reuse_freed_memory() -> None:
    """Keep freed memory in the process for the next allocation instead of handing it back.

    By default glibc maps every block over 32 MB fresh from the system and returns it when freed,
    and fresh pages cost a page fault and zeroing on first touch, every step (docs/method.md). This
    policy serves every block from the process heap, one heap for all threads, and never trims it,
    so the process keeps its peak size until `release_freed_memory`. Process-wide, so the caller
    decides (the app, and the CLI up to 768 px).
    """
    _glibc("mallopt", M_ARENA_MAX, 1)
    _glibc("mallopt", M_MMAP_MAX, 0)
    _glibc("mallopt", M_TRIM_THRESHOLD, 2**31 - 1)


def reuse_small_blocks() -> None:
    """Keep freed blocks up to 32 MB (glibc's largest threshold) for the next allocation, and serve
    larger ones from fresh pages that go back to the system when freed.

    For pictures in tiles: a heap that kept every block grew to 2.7 times a tile pass's own memory at
    4096 px (a pass's gradients are made while its activations are freed, in other sizes), where
    fresh pages for every block cost a step 53 s instead of 31 s; this policy's step took 39 s, with
    1.7 times the pass's memory (docs/method.md).
    """
    _glibc("mallopt", M_ARENA_MAX, 1)
    _glibc("mallopt", M_MMAP_THRESHOLD, 32 * 2**20)
    _glibc("mallopt", M_TRIM_THRESHOLD, 2**31 - 1)


def release_freed_memory() -> None:
    """Hand the memory freed since the last call back to the system (glibc's malloc_trim).

    With `reuse_freed_memory` the process keeps its peak size; a server calls this between runs so
    that an idle process shrinks back, at the cost of faulting pages in again on the next run's
    first step.
    """
    _glibc("malloc_trim", 0)


def limit_heap_growth() -> None:
    """Serve every allocation over 128 KB from fresh pages that go back to the system when freed.

    glibc raises that threshold as large blocks are freed, after which the picture-sized buffers of
    each step come from the heap and fragment it, and a large picture's process grows every step.
    Fresh pages cost page faults, which only large pictures amortise,
    and the policy is process-wide: so the caller decides (the CLI does, for large pictures).
    """
    _glibc("mallopt", M_MMAP_THRESHOLD, 128 * 1024)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8


def _glibc(function: str, *arguments: int) -> None:
    try:
        import ctypes

        getattr(ctypes.CDLL("libc.so.6"), function)(*arguments)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune
