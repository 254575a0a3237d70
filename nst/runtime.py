"""Where and how fast a picture is computed: device and precision, Winograd's choice, CUDA graphs.
None of it changes what the method computes (the allocator's policy is `nst.memory`'s)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .memory import LARGE_PICTURE
from .devices import resolve_device
from .settings import Settings

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
