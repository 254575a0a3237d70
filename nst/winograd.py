"""3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3), for the wide layers on CPU.

A direct 3x3 convolution spends 9 multiply-adds per output and input channel. F(4x4, 3x3) cuts
each 4x4 block of outputs out of a 6x6 tile of input, takes both the tile and the filter to a
transformed space where the convolution is an element-wise product, and so needs 36 instead of
144 multiply-adds per block: the 36 element-wise products over channels are 36 matrix products,
which run at full speed on a CPU. The transforms are cheap only next to wide layers, such as
VGG19's 256- and 512-channel ones (speed and accuracy against oneDNN: docs/method.md).

Our network is frozen, so the transformed filters are computed once, and the gradient with
respect to the input runs the same transforms backwards with the same transformed filters.
See Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Transformed tiles per band of the picture, in bytes: bounds the working memory on large pictures.
BAND_BYTES = 32 * 2**20

# The transforms for the interpolation points 0, 1, -1, 2, -2 and infinity.
_INPUT_T = (  # B^T
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_FILTER = (  # G
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_OUTPUT_T = (  # A^T
    (1, 1, 1, 1, 1, 0),
    (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0),
    (0, 1, -1, 8, -8, 1),
)


def transform_filters(weight: Tensor) -> Tensor:
    """(K, C, 3, 3) filters -> (36, C, K): G g G^T for each filter, as 36 matrices C x K."""
    g = _matrix(_FILTER, weight)
    # Two large matrix products over all filters at once, not K C small ones: faster at model load.
    return torch.einsum("ia,kcab,jb->ijck", g, weight, g).reshape(36, weight.shape[1], weight.shape[0]).contiguous()


def _tile_rows_per_band(width: int, channels: int) -> int:
    """Tile rows processed together: each band's transformed tiles stay near BAND_BYTES."""
    tiles_w = -(-width // 4)
    return max(1, BAND_BYTES // (36 * tiles_w * channels * 4))


def _matrix(rows, like: Tensor) -> Tensor:
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def convolve(x: Tensor, filters: Tensor, bias: Tensor | None = None) -> Tensor:
    """3x3 convolution with padding 1 of a (1, C, H, W) tensor; `filters` from transform_filters.

    Returns a channels-last (1, K, H, W) tensor.
    """
    _, channels, height, width = x.shape
    out_channels = filters.shape[2]
    input_t, output_t = _matrix(_INPUT_T, filters), _matrix(_OUTPUT_T, filters)
    tiles_h, tiles_w = -(-height // 4), -(-width // 4)
    # (H, W, C) with the padding of the convolution and up to whole tiles: rows are position-major.
    padded = F.pad(x[0].permute(1, 2, 0), (0, 0, 1, 4 * tiles_w + 1 - width, 1, 4 * tiles_h + 1 - height)).contiguous()
    out = torch.empty((1, out_channels, height, width), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    out_rows = out[0].permute(1, 2, 0)
    band = _tile_rows_per_band(width, max(channels, out_channels))
    for first in range(0, tiles_h, band):
        rows = min(band, tiles_h - first)
        # B^T d B for each 6x6 tile at (4t, 4u): (36, tiles, C).
        tiles = _transform_windows(padded[4 * first : 4 * (first + rows) + 2], input_t, rows, tiles_w)
        products = torch.bmm(tiles, filters)  # (36, tiles, K)
        del tiles
        # A^T m A for each tile: (4 p, 4 q, rows, tiles_w, K), output row 4t + p, column 4u + q.
        half = torch.matmul(output_t, products.view(6, 6, -1))
        del products
        blocks = (output_t @ half.view(6, -1)).view(4, 4, rows, tiles_w, out_channels)
        del half
        top = 4 * first
        if width % 4:
            result = blocks.permute(2, 0, 3, 1, 4).reshape(4 * rows, 4 * tiles_w, out_channels)
            bottom = min(top + 4 * rows, height)
            _store(out_rows[top:bottom], result[: bottom - top, :width], bias)
            continue
        # Whole tiles go straight to their places in the output; then the cut last tile row.
        whole = min(rows, (height - top) // 4)
        if whole:
            _store(out_rows[top : top + 4 * whole].view(whole, 4, tiles_w, 4, out_channels),
                   blocks[:, :, :whole].permute(2, 0, 3, 1, 4), bias)
        if whole < rows:
            cut = height - top - 4 * whole
            _store(out_rows[top + 4 * whole : height].view(cut, tiles_w, 4, out_channels),
                   blocks[:cut, :, whole].permute(0, 2, 1, 3), bias)
    return out


def _store(target: Tensor, values: Tensor, bias: Tensor | None) -> None:
    if bias is None:
        target.copy_(values)
    else:
        torch.add(values, bias, out=target)


def _transform_windows(padded: Tensor, input_t: Tensor, tiles_h: int, tiles_w: int) -> Tensor:
    """The 6x6 windows at stride 4 of a (4 tiles_h + 2, 4 tiles_w + 2, C) tensor, as B^T d B: (36, tiles, C)."""
    channels = padded.shape[-1]
    row = padded.shape[1] * channels
    # B^T along the rows 4t + i of each tile row t, read in place: (tiles_h, 6, width, C).
    rows = torch.matmul(input_t, padded.as_strided((tiles_h, 6, row), (4 * row, row, 1)))
    # Columns 4u + j of every tile, then B^T along them.
    cols = rows.as_strided((6, 6, tiles_h, tiles_w, channels), (row, channels, 6 * row, 4 * channels, 1)).contiguous()
    del rows
    return torch.matmul(input_t, cols.view(6, 6, -1)).view(36, tiles_h * tiles_w, channels)


def convolve_transposed(grad: Tensor, filters: Tensor) -> Tensor:
    """The gradient of convolve(x, filters) with respect to x, given the gradient of its output.

    Runs the forward algorithm backwards with the same transformed filters: A g A^T per 4x4
    block, products with the transposed filters, B w B^T per 6x6 tile, and the overlapping
    tiles summed where they meet.
    """
    _, out_channels, height, width = grad.shape
    channels = filters.shape[1]
    input_t, output_t = _matrix(_INPUT_T, filters), _matrix(_OUTPUT_T, filters)
    tiles_h, tiles_w = -(-height // 4), -(-width // 4)
    blocks = F.pad(grad[0].permute(1, 2, 0), (0, 0, 0, 4 * tiles_w - width, 0, 4 * tiles_h - height))
    # Sums of the overlapping tiles, in the padded frame; 2 spare columns and rows at the end.
    total = torch.zeros((4 * tiles_h + 4, 4 * tiles_w + 4, channels), dtype=grad.dtype, device=grad.device)
    band = _tile_rows_per_band(width, max(channels, out_channels))
    for first in range(0, tiles_h, band):
        rows = min(band, tiles_h - first)
        # (4 p, 4 q, tiles, K), then A along both: (36, tiles, K).
        block = blocks[4 * first : 4 * (first + rows)].reshape(rows, 4, tiles_w, 4, out_channels).permute(1, 3, 0, 2, 4)
        half = (output_t.T @ block.reshape(4, -1)).view(6, 4, -1)
        spread = torch.matmul(output_t.T, half).view(36, rows * tiles_w, out_channels)
        del half
        products = torch.bmm(spread, filters.transpose(1, 2))  # (36, tiles, C)
        del spread
        # B w B^T per tile: (6 i, 6 j, rows, tiles_w, C).
        half = torch.matmul(input_t.T, products.view(6, 6, -1))
        del products
        tiles = (input_t.T @ half.view(6, -1)).view(6, 6, rows, tiles_w, channels)
        del half
        # Sum the tiles into (6 i, rows, 4 tiles_w + 4, C): columns 4u + j, overlapping by 2.
        across = tiles.new_zeros((6, rows, 4 * tiles_w + 4, channels))
        across[:, :, : 4 * tiles_w].view(6, rows, tiles_w, 4, channels).copy_(tiles[:, :4].permute(0, 2, 3, 1, 4))
        across[:, :, 4:].view(6, rows, tiles_w, 4, channels)[:, :, :, :2] += tiles[:, 4:].permute(0, 2, 3, 1, 4)
        del tiles
        # Then rows 4t + i, overlapping by 2, into the running total.
        top = 4 * first
        total[top : top + 4 * rows].view(rows, 4, -1, channels).add_(across[:4].transpose(0, 1))
        total[top + 4 : top + 4 * rows + 4].view(rows, 4, -1, channels)[:, :2] += across[4:].transpose(0, 1)
    out = torch.empty((1, channels, height, width), dtype=grad.dtype, device=grad.device, memory_format=torch.channels_last)
    out[0].permute(1, 2, 0).copy_(total[1 : height + 1, 1 : width + 1])
    return out


class _FrozenConvolution(torch.autograd.Function):
    """Forward and input gradient by Winograd; no gradient for the frozen filters and bias."""

    @staticmethod
    def forward(ctx, x: Tensor, filters: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(filters)
        return convolve(x, filters, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (filters,) = ctx.saved_tensors
        return convolve_transposed(grad, filters), None, None


def frozen_convolution(x: Tensor, filters: Tensor, bias: Tensor) -> Tensor:
    """convolve(x, filters, bias), differentiable in x only."""
    return _FrozenConvolution.apply(x, filters, bias)
