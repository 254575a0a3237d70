"""The loss terms of Gatys et al., as small pure functions.

Feature maps are matrices of shape (N, M): N filters by M positions. The functions follow the
paper's definitions to the letter; how the engine makes user-facing weights independent of the
image size is documented in `nst.engine`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def as_matrix(features: Tensor) -> Tensor:
    """(1, N, H, W) activations as an (N, M) matrix, M = H * W, in float32.

    For channels-last activations the matrix is a transposed view, so no copy is made.
    """
    _, channels, height, width = features.shape
    if channels > 1 and features.is_contiguous(memory_format=torch.channels_last):
        return features.permute(0, 2, 3, 1).reshape(height * width, channels).T.float()
    return features.reshape(channels, height * width).float()


def content_loss(generated: Tensor, target: Tensor) -> Tensor:
    """1/2 * sum (F - P)^2 over filters and positions."""
    return 0.5 * (generated.float() - target.float()).pow(2).sum()


def gram(features: Tensor) -> Tensor:
    """G = F F^T: inner products between the feature maps of an (N, M) matrix."""
    features = features.float()
    return features @ features.T


def style_layer_loss(generated_gram: Tensor, target_gram: Tensor, filters: int, positions: int) -> Tensor:
    """1 / (4 N^2 M^2) * sum (G - A)^2."""
    return (generated_gram - target_gram).pow(2).sum() / (4.0 * filters**2 * positions**2)


def style_loss(layer_losses: list[Tensor], layer_weights: list[float]) -> Tensor:
    """sum over layers of w_l * E_l."""
    return sum(weight * loss for weight, loss in zip(layer_weights, layer_losses, strict=True))


def total_variation(image: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels (per pixel, so independent of size)."""
    image = image.float()
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).sum()
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).sum()
    return (dx + dy) / image[0, 0].numel()


def total_loss(content: Tensor, style: Tensor, tv: Tensor, alpha: float, beta: float, gamma: float) -> Tensor:
    """alpha * content + beta * style + gamma * total variation."""
    return alpha * content + beta * style + gamma * tv
