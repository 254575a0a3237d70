"""Memory policy, in one place: what a run may take, what it holds beside a pass and the tile's budget
(`nst.tiles` plans the tiles), L-BFGS's history length, and the allocator policies that decide which
freed blocks a process keeps. None of it changes what the method computes; the measurements behind
the figures are in docs/method.md (Where the speed comes from) and docs/speed.md (Peak memory, Print size)."""

from __future__ import annotations

import torch

from .layers import LAYERS, channels_per_pixel

# Above this long side memory comes first on CPU (docs/method.md): `use_memory_policy` keeps fewer
# freed blocks for reuse (none with `tile` off, which also leaves Winograd's convolutions out: their
# transformed filters are large), and the engine hands freed memory back between such scales.
LARGE_PICTURE = 768
# Up to this long side a run in tiles keeps every freed block all the same: its steps are faster and
# its heap stays within the run's memory; above, such a heap outgrew it (docs/speed.md, Peak memory).
KEPT_TILED_PICTURE = 2048

# On CPU, what a run may take in all: a tile's pass (forward and backward) takes what the picture's
# own tensors (`held_bytes`) leave of it, so that a 4096 px run stays within its 6 GB aim and a smaller
# one takes larger tiles, which read less margin; but at least MIN_TILE_MEMORY (docs/speed.md, Print size).
RUN_MEMORY = 5 * 2**30
MIN_TILE_MEMORY = 2**30
# Peak bytes of a forward and backward pass per input pixel and per channel-per-pixel of the network
# (`layers.channels_per_pixel`), in float32, measured with /usr/bin/time -v on CPU; counted so in bf16
# too, whose Gram matrices and sums take float32 copies of the activations.
BYTES_PER_CHANNEL = 8.0
# Picture-sized float32 tensors held besides L-BFGS's history: the picture, its gradient, L-BFGS's
# state, the photo and its copy at the scale, the last good picture, the painting, frame buffers.
HELD_PICTURES = 12

LBFGS_HISTORY = 20
LBFGS_MEMORY = 200 * 2**20  # bytes for L-BFGS's history: each pair holds two image-sized vectors
# ... and at least LBFGS_MIN_HISTORY pairs, as long as they fit in this, so that a print-size picture
# keeps a useful history; beyond, memory is set by the tile, and the history must fit too (docs/method.md).
LBFGS_MIN_HISTORY = 5
LBFGS_LARGE_MEMORY = 3 * 2**29


def lbfgs_history(numel: int, element_size: int = 4) -> int:
    """L-BFGS's history length for a picture of `numel` values: pairs of two such vectors."""
    pair = 2 * numel * element_size
    return max(min(LBFGS_MIN_HISTORY, max(1, LBFGS_LARGE_MEMORY // pair)), min(LBFGS_HISTORY, LBFGS_MEMORY // pair))


def pass_bytes(pixels: int, deepest: str) -> float:
    """Peak memory of a forward and backward pass over `pixels` input pixels to `deepest`."""
    return pixels * channels_per_pixel(deepest) * BYTES_PER_CHANNEL


def held_bytes(height: int, width: int, history: int, content_layer: str) -> float:
    """What a run holds for the whole picture besides a pass: picture-sized tensors, L-BFGS's
    history pairs, the content target."""
    picture = 3 * height * width * 4
    layer = LAYERS[content_layer]
    target = layer.width * height * width / layer.stride**2 * 4
    return (HELD_PICTURES + 2 * history) * picture + target


def available_memory(device: torch.device) -> int:
    """Bytes free for this run: on CUDA the device's free memory, else the system's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 * RUN_MEMORY  # not Linux: RUN_MEMORY decides


def tile_budget(device: torch.device, held: float) -> float:
    """What one tile's pass may take: half of what is free besides `held`; on CPU at most what
    RUN_MEMORY leaves beside `held`, or MIN_TILE_MEMORY."""
    free = max(0.0, (available_memory(device) - held) / 2)
    return free if device.type == "cuda" else min(max(RUN_MEMORY - held, MIN_TILE_MEMORY), free)


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
    decides (the app, and the CLI up to LARGE_PICTURE).
    """
    _glibc("mallopt", M_ARENA_MAX, 1)
    _glibc("mallopt", M_MMAP_MAX, 0)
    _glibc("mallopt", M_TRIM_THRESHOLD, 2**31 - 1)


def reuse_small_blocks() -> None:
    """Keep freed blocks up to 32 MB (glibc's largest threshold) for the next allocation, and serve
    larger ones from fresh pages that go back to the system when freed.

    For pictures in tiles: a tile's pass makes its gradients while its activations are freed, in
    other sizes, so a heap that kept every block grew well past the pass's own memory, and fresh
    pages for every block slowed a step most; this policy lies between (docs/method.md, Memory first).
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
