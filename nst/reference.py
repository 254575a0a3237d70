"""The textbook loop our engine is measured against: by `nst.bench` for speed (`NaiveGatys`), by
`nst.quality` for the picture (`anchor`). As the neural-style scripts have it, VGG19 reads pixels in
Caffe's units, and torch's L-BFGS runs as neural-style runs it: a history of 100 pairs, no line
search, never stopping early. One iteration a step, so that a caller can time each or count them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .layers import CAFFE_BGR_MEAN

HISTORY = 100


def caffe_mean(device: torch.device | str) -> Tensor:
    """The mean pixel of Caffe's weights, (1, 3, 1, 1) in BGR order."""
    return torch.tensor(CAFFE_BGR_MEAN, device=device).view(1, 3, 1, 1)


def to_caffe(rgb: Tensor, mean: Tensor) -> Tensor:
    """RGB in [0, 1] -> BGR in 0-255, less the mean pixel."""
    return rgb.flip(1) * 255 - mean


def to_rgb(caffe: Tensor, mean: Tensor) -> Tensor:
    """The inverse of `to_caffe`."""
    return (caffe + mean).flip(1) / 255


def lbfgs_steps(pixels: Tensor, loss: Callable[[], Tensor]) -> Iterator[Tensor]:
    """`pixels` (a leaf that requires its gradient) after each iteration of L-BFGS on `loss()`, which
    evaluates the loss at `pixels` once an iteration."""
    optimizer = torch.optim.LBFGS([pixels], max_iter=1, tolerance_grad=-1, tolerance_change=-1, history_size=HISTORY)

    def closure() -> Tensor:
        optimizer.zero_grad()
        value = loss()
        value.backward()
        return value

    while True:
        optimizer.step(closure)
        yield pixels
