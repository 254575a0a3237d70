"""Exact tiles: the objective's loss and gradient of a large picture, one tile at a time.

Every loss term is a sum over the positions of some layer: the content term's squared errors, a Gram
matrix (sum of F F^T), a mask's region Gram (sum of m F F^T, over sum of m) and total variation's
neighbour differences. So each tile owns the positions of its core at every layer and counts only
those. It reads its core plus a margin of input as wide as the deepest layer's reach (70 px a side
for relu5_1, rounded up to 80, the pooling grid of 16), so every position it owns is computed exactly
as in the whole picture; core origins on multiples of the grid keep max pooling's windows where the
whole picture has them; where a tile meets the picture's border, the picture's zero padding is the
tile's.

Pass 1 (no gradient, but for the last tile, whose graph pass 2 begins with) sums the Gram matrices
and the loss over the tiles. Pass 2 runs each tile again with gradients, the summed Gram matrices
held fixed: the whole picture's loss has, with respect to what the tile owns, the gradient
alpha (F - P) at the content layer and (W + W^T) F at each style layer, W = dE/dG_l, plus its TV
sum's; back-propagated, the tile's whole input gradient (core and margin) is added into the
picture's (`Objective._tiled`). Memory is one tile's activations plus what is held for the whole picture.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .layers import LAYER_INDEX, LAYERS
from .memory import pass_bytes, tile_budget

# The smallest core side a tile may have; `tile` refuses smaller.
MIN_TILE = 64
# Pass 1 (a forward without gradient) and pass 2 (forward and backward) against one forward and
# backward, per pixel read: measured on a tiled step against a whole one (docs/speed.md, Print size).
TILED_PASSES = 1.27


@dataclass(frozen=True)
class Tile:
    """A tile's core (the positions it owns) and what it reads, as (top, bottom, left, right) in px."""

    core: tuple[int, int, int, int]
    read: tuple[int, int, int, int]

    def region(self, tensor: Tensor) -> Tensor:
        top, bottom, left, right = self.read
        return tensor[..., top:bottom, left:right]


@dataclass(frozen=True)
class Plan:
    """The tiles of a (height, width) picture for a network run to `deepest`."""

    height: int
    width: int
    rows: tuple[int, ...]  # core boundaries, from 0 to height
    columns: tuple[int, ...]
    margin: int
    grid: int

    def __iter__(self) -> Iterator[Tile]:
        for top, bottom in zip(self.rows, self.rows[1:]):
            for left, right in zip(self.columns, self.columns[1:]):
                read = (max(0, top - self.margin), min(self.height, bottom + self.margin),
                        max(0, left - self.margin), min(self.width, right + self.margin))
                yield Tile((top, bottom, left, right), read)

    def __len__(self) -> int:
        return (len(self.rows) - 1) * (len(self.columns) - 1)

    def size_at(self, layer: str) -> tuple[int, int]:
        """The (height, width) of the whole picture's map at `layer`."""
        stride = LAYERS[layer].stride
        return _layer_size(self.height, stride), _layer_size(self.width, stride)

    def core_of(self, tile: Tile, layer: str, features: Tensor) -> tuple[slice, slice]:
        """The rows and columns of a tile's `features` at `layer` that the tile owns."""
        stride = LAYERS[layer].stride
        top, bottom, left, right = tile.core
        read_top, _, read_left, _ = tile.read
        rows = slice((top - read_top) // stride, (bottom - read_top) // stride if bottom < self.height else features.shape[-2])
        columns = slice((left - read_left) // stride, (right - read_left) // stride if right < self.width else features.shape[-1])
        return rows, columns

    def global_core(self, tile: Tile, layer: str, size: tuple[int, int]) -> tuple[slice, slice]:
        """The same positions in the whole picture's map at `layer`, of `size`."""
        stride = LAYERS[layer].stride
        top, bottom, left, right = tile.core
        return (slice(top // stride, bottom // stride if bottom < self.height else size[0]),
                slice(left // stride, right // stride if right < self.width else size[1]))


def step_cost(plan: Plan | None) -> float:
    """A step's cost in tiles against the whole picture's: the margins read, and pass 1's forward."""
    if plan is None:
        return 1.0
    read = sum((bottom - top) * (right - left) for top, bottom, left, right in (tile.read for tile in plan))
    return TILED_PASSES * read / (plan.height * plan.width)


def margin_and_grid(layers: Collection[str]) -> tuple[int, int]:
    """The input margin a tile reads around its core for these layers, on their pooling grid, and the grid."""
    grid = max(LAYERS[layer].stride for layer in layers)
    return math.ceil(max(LAYERS[layer].reach for layer in layers) / grid) * grid, grid


def plan(height: int, width: int, layers: Collection[str], tile: int) -> Plan | None:
    """Tiles with cores of about `tile` px (on the grid, spread evenly), or None where one tile is the picture."""
    margin, grid = margin_and_grid(layers)
    tile = max(grid, tile // grid * grid)
    if height <= tile and width <= tile:
        return None
    return Plan(height, width, _boundaries(height, tile, grid), _boundaries(width, tile, grid), margin, grid)


def shared_plan(height: int, width: int, layers: Collection[str], processes: int) -> Plan:
    """The fewest tiles, and so the least margin read twice, that give each of `processes` at least one:
    from the largest side on the grid down (the tiles spread evenly); at worst tiles of MIN_TILE."""
    _, grid = margin_and_grid(layers)
    for side in range(max(height, width) // grid * grid, MIN_TILE - 1, -grid):
        tiles = plan(height, width, layers, side)
        if tiles is not None and len(tiles) >= processes:
            return tiles
    return plan(height, width, layers, MIN_TILE) or Plan(height, width, (0, height), (0, width), *margin_and_grid(layers))


def _boundaries(length: int, tile: int, grid: int) -> tuple[int, ...]:
    count = math.ceil(length / tile)
    return tuple(round(k * length / (count * grid)) * grid for k in range(count)) + (length,)


def choose_tile(setting: str, height: int, width: int, layers: Collection[str], device: torch.device, held: float,
) -> int | None:
    """The tile's core side for a picture, or None for the whole picture at once: `setting` is "off",
    a side in px, or "auto": the whole picture when its pass fits the budget (`tile_budget`), else
    the largest square tile, margins included, that does."""
    if setting == "off":
        return None
    if setting != "auto":
        return int(setting)
    deepest = max(layers, key=LAYER_INDEX.__getitem__)
    budget = tile_budget(device, held)
    if pass_bytes(height * width, deepest) <= budget:
        return None
    margin, grid = margin_and_grid(layers)
    side = math.isqrt(int(budget / pass_bytes(1, deepest)))  # the side read, margins included
    return max(MIN_TILE, (side - 2 * margin) // grid * grid)


def features_of(image: Tensor, layers: Collection[str], tiles: Plan, run) -> dict[str, Tensor]:
    """The whole picture's activations at `layers`, made tile by tile (no gradient). `run(piece, layers)`
    runs the network."""
    out: dict[str, Tensor] = {}
    for tile in tiles:
        features = run(tile.region(image), layers)
        for layer in layers:
            piece = features[layer]
            if layer not in out:
                out[layer] = piece.new_empty((1, piece.shape[1], *tiles.size_at(layer))).contiguous(memory_format=torch.channels_last)
            rows, columns = tiles.core_of(tile, layer, piece)
            out[layer][(..., *tiles.global_core(tile, layer, tuple(out[layer].shape[-2:])))] = piece[..., rows, columns]
    return out


def _layer_size(length: int, stride: int) -> int:
    while stride > 1:
        length, stride = length // 2, stride // 2
    return length


def core_features(tiles: Plan, tile: Tile, layer: str, features: Tensor) -> Tensor:
    """The window of a tile's `features` at `layer` that the tile owns."""
    rows, columns = tiles.core_of(tile, layer, features)
    return _Window.apply(features, rows, columns)


class _Window(torch.autograd.Function):
    """features[..., rows, columns], whose gradient is laid out as `features` is (channels-last).

    Slicing's own backward makes a gradient in the default layout, and adding it to the one that
    flows back through the next layer then takes longer than the layer's convolution."""

    @staticmethod
    def forward(ctx, features: Tensor, rows: slice, columns: slice) -> Tensor:
        ctx.window, ctx.shape = (..., rows, columns), features.shape
        ctx.layout = torch.channels_last if features.stride(1) == 1 and features.shape[1] > 1 else torch.contiguous_format
        return features[..., rows, columns]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        whole = grad.new_zeros(ctx.shape).contiguous(memory_format=ctx.layout)
        whole[ctx.window] = grad
        return whole, None, None


def total_variation_sum(tiles: Plan, tile: Tile, piece: Tensor) -> Tensor:
    """The squared differences between each pixel of the core and its right and lower neighbours."""
    top, bottom, left, right = tile.core
    read_top, read_bottom, read_left, read_right = tile.read
    piece = piece.to(torch.promote_types(piece.dtype, torch.float32))
    core_rows = slice(top - read_top, bottom - read_top)
    core_columns = slice(left - read_left, right - read_left)
    across = piece[..., core_rows, left - read_left: min(right, read_right - 1) - read_left + 1]
    down = piece[..., top - read_top: min(bottom, read_bottom - 1) - read_top + 1, core_columns]
    return (across[..., :, 1:] - across[..., :, :-1]).pow(2).sum() + (down[..., 1:, :] - down[..., :-1, :]).pow(2).sum()
