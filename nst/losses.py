"""The loss terms of Gatys et al., as small pure functions.

Feature maps are matrices of shape (N, M): N filters by M positions. The functions follow the
paper's definitions to the letter; how the user-facing weights are made independent of the image
size is in `nst.objective` (and docs/method.md).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _at_least_fp32(tensor: Tensor) -> Tensor:
    """bf16 and fp16 go up to float32 for sums; float64 stays."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def as_matrix(features: Tensor) -> Tensor:
    """(1, N, H, W) activations as an (N, M) matrix, M = H * W, in float32.

    For channels-last activations the matrix is a transposed view, so no copy is made; for a window of
    them (a tile's core) the copy keeps each position's channels together, as they lie in memory.
    """
    _, channels, height, width = features.shape
    if channels > 1 and features.stride(1) == 1:
        return _at_least_fp32(features.permute(0, 2, 3, 1).reshape(height * width, channels)).T
    return _at_least_fp32(features.reshape(channels, height * width))


def content_loss(generated: Tensor, target: Tensor) -> Tensor:
    """1/2 * sum (F - P)^2 over filters and positions."""
    return 0.5 * (_at_least_fp32(generated) - _at_least_fp32(target)).pow(2).sum()


def gram(features: Tensor) -> Tensor:
    """G = F F^T: inner products between the feature maps of an (N, M) matrix, in float32 or wider.

    Also under autocast, which would otherwise run the product in bfloat16: a sum over every
    position of the picture needs float32's 24 bits.
    """
    with torch.autocast(features.device.type, enabled=False):
        return _Gram.apply(_at_least_fp32(features))


class _Gram(torch.autograd.Function):
    """F F^T with a backward that allocates one (N, M) gradient, laid out like F.

    Autograd's own backward of a matrix product makes two (N, M) products and their sum, which set
    the peak memory of a large picture's step.
    """

    @staticmethod
    def forward(ctx, features: Tensor) -> Tensor:
        ctx.save_for_backward(features)
        return features @ features.T

    @staticmethod
    def backward(ctx, grad_gram: Tensor) -> Tensor:
        (features,) = ctx.saved_tensors
        symmetric = grad_gram + grad_gram.T
        # (F^T S)^T has F's memory layout (a transposed view when F is one), so nothing is copied later.
        return (features.T @ symmetric).T


def style_layer_loss(generated_gram: Tensor, target_gram: Tensor, filters: int, positions: int) -> Tensor:
    """1 / (4 N^2 M^2) * sum (G - A)^2."""
    return (generated_gram - target_gram).pow(2).sum() / (4.0 * filters**2 * positions**2)


def style_loss(layer_losses: list[Tensor], layer_weights: list[float]) -> Tensor:
    """sum over layers of w_l * E_l."""
    return sum(weight * loss for weight, loss in zip(layer_weights, layer_losses, strict=True))


def total_variation(image: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels (per pixel, so independent of size)."""
    image = _at_least_fp32(image)
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).sum()
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).sum()
    return (dx + dy) / image[0, 0].numel()


def total_loss(content: Tensor, style: Tensor, tv: Tensor, alpha: float, beta: float, gamma: float) -> Tensor:
    """alpha * content + beta * style + gamma * total variation."""
    return alpha * content + beta * style + gamma * tv
