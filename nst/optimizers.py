"""The optimisers of the pixels: our L-BFGS (`nst.lbfgs`) and torch's Adam, both kept inside [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .lbfgs import LBFGS

# Adam's step in RGB units of [0, 1] (about 4 grey levels), for each scale of the schedule.
ADAM_LEARNING_RATE = 4 / 255
LBFGS_HISTORY = 20
LBFGS_MEMORY = 200 * 2**20  # bytes for L-BFGS's history: each pair holds two image-sized vectors
# ... and at least LBFGS_MIN_HISTORY pairs, as long as they fit in this (at 4096 px: 5 pairs of 134 MB
# vectors, at 8192 px one pair): beyond, memory is set by the tile (nst.tiles) and the history must fit too.
LBFGS_MIN_HISTORY = 5
LBFGS_LARGE_MEMORY = 3 * 2**29


class BoundedAdam:
    """Adam whose every step ends inside [0, 1], as L-BFGS's projected steps do."""

    def __init__(self, image: Tensor):
        self.image, self.adam = image, torch.optim.Adam([image], lr=ADAM_LEARNING_RATE, fused=image.is_cuda)

    def zero_grad(self) -> None:
        self.adam.zero_grad()

    def state_dict(self) -> dict:
        return self.adam.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.adam.load_state_dict(state)

    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        loss = self.adam.step(closure)
        with torch.no_grad():
            self.image.clamp_(0, 1)
        return loss


def make_optimizer(name: str, image: Tensor) -> LBFGS | BoundedAdam:
    """An optimiser, "lbfgs" or "adam", over the picture `image` (pixels in [0, 1])."""
    if name == "adam":
        return BoundedAdam(image)
    return LBFGS(image, history=lbfgs_history(image.numel(), image.element_size()), bounds=(0.0, 1.0))


def lbfgs_history(numel: int, element_size: int = 4) -> int:
    """L-BFGS's history length for a picture of `numel` values: pairs of two such vectors."""
    pair = 2 * numel * element_size
    return max(min(LBFGS_MIN_HISTORY, max(1, LBFGS_LARGE_MEMORY // pair)), min(LBFGS_HISTORY, LBFGS_MEMORY // pair))
