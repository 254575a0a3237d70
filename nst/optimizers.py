"""The optimisers of the pixels: our L-BFGS (`nst.lbfgs`) and torch's Adam, both kept inside [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .lbfgs import LBFGS
from .memory import lbfgs_history

# Adam's step in RGB units of [0, 1] (about 4 grey levels), for each scale of the schedule.
ADAM_LEARNING_RATE = 4 / 255


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

