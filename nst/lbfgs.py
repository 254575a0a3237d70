"""L-BFGS for a picture: one evaluation a step, no line search, and steps bounded in pixel units.

torch's LBFGS(max_iter=1) takes a first step of 1 / sum|g| and then trusts any curvature pair with
s.y > 1e-10. Our losses are normalised, so at 512 px the first step moved no pixel by even 1e-4,
its pair fell under that absolute threshold, and the next step was the raw gradient at full length:
in one coarse-to-fine run the style loss jumped from 0.29 to 90 at the start of the last scale and
had not recovered 44 steps later. Here every step is measured in what it does to the pixels:

- until a first pair is remembered, a step moves the most-changed pixel by FIRST_CHANGE (about
  5 grey levels);
- a pair enters the memory only if its curvature is positive relative to its length,
  s.y > CURVATURE_TOLERANCE |s| |y|, which does not depend on the scale of the loss;
- no step moves any pixel by more than MAX_CHANGE; a longer one is shortened along its direction.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor

FIRST_CHANGE = 0.02
MAX_CHANGE = 0.25
CURVATURE_TOLERANCE = 1e-8


class LBFGS(torch.optim.Optimizer):
    """Limited-memory BFGS over one tensor, `history` pairs, one closure evaluation a step."""

    def __init__(self, params, history: int = 20):
        super().__init__(params, {})
        if len(self.param_groups) != 1 or len(self.param_groups[0]["params"]) != 1:
            raise ValueError("LBFGS optimises exactly one tensor")
        self.pairs: deque[tuple[Tensor, Tensor, Tensor]] = deque(maxlen=history)  # (s, y, 1 / s.y)
        self.inverse_curvature: Tensor | None = None  # s.y / y.y of the newest pair
        self.previous_grad: Tensor | None = None
        self.previous_step: Tensor | None = None

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        (image,) = self.param_groups[0]["params"]
        grad = image.grad.reshape(-1)
        if self.previous_grad is not None:
            self._remember(self.previous_step, grad - self.previous_grad)
        direction = self._direction(grad)
        first = self.inverse_curvature is None
        scale = (FIRST_CHANGE if first else MAX_CHANGE) / direction.abs().max().clamp_min(1e-30)
        direction.mul_(scale if first else scale.clamp(max=1.0))  # a tensor factor: no sync
        image.add_(direction.view_as(image))
        self.previous_grad, self.previous_step = grad.clone(), direction
        return loss

    def _remember(self, step: Tensor, grad_change: Tensor) -> None:
        curvature = step.dot(grad_change)
        if curvature > CURVATURE_TOLERANCE * step.norm() * grad_change.norm():
            self.pairs.append((step, grad_change, 1 / curvature))
            self.inverse_curvature = curvature / grad_change.dot(grad_change)

    def _direction(self, grad: Tensor) -> Tensor:
        """-H g by the two-loop recursion, H the inverse Hessian estimate from the remembered pairs."""
        direction = grad.neg()
        alphas = []
        for step, grad_change, rho in reversed(self.pairs):
            alpha = step.dot(direction) * rho
            direction.sub_(grad_change * alpha)
            alphas.append(alpha)
        if self.inverse_curvature is not None:
            direction.mul_(self.inverse_curvature)
        for (step, grad_change, rho), alpha in zip(self.pairs, reversed(alphas), strict=True):
            beta = grad_change.dot(direction) * rho
            direction.add_(step * (alpha - beta))
        return direction
