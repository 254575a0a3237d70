"""L-BFGS for a picture: one evaluation a step, no line search, and steps bounded in pixel units.

torch's LBFGS(max_iter=1) sizes its first step and trusts curvature pairs by absolute thresholds,
which our normalised losses fall under, and then steps by the raw gradient at full length (see
docs/method.md, L-BFGS). Here every step is measured in what it does to the pixels:

- until a first pair is remembered, a step moves the most-changed pixel by FIRST_CHANGE (about
  5 grey levels);
- a pair enters the memory only if its curvature is positive relative to its length,
  s.y > CURVATURE_TOLERANCE |s| |y|, which does not depend on the scale of the loss;
- no step moves any pixel by more than MAX_CHANGE; a longer one is shortened along its direction;
- with `bounds`, pixels held at a bound and pushed further out stay where they are, each step is
  projected onto the bounds (pixels stay in [0, 1]), and the pair remembers the projected move.

The initial inverse Hessian, which the remembered pairs then correct, is not the usual multiple of
the identity but a diagonal one, gamma D: D = 1 / sqrt(running mean of g^2) per pixel, as in Adam
and RMSprop, and gamma = s.y / (y.D.y) from the newest pair. Pixels whose gradients are small get
proportionally longer steps, which matters most after the jump to a finer scale.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor

FIRST_CHANGE = 0.02
MAX_CHANGE = 0.25
CURVATURE_TOLERANCE = 1e-8
# Weight of the past in the running mean of squared gradients.
GRADIENT_AVERAGING = 0.9
# Added to each pixel's mean square, relative to the average one: bounds how much longer a step
# along a pixel with a vanishing gradient can get than along the average pixel.
DIAGONAL_FLOOR = 1e-3


class LBFGS:
    """Limited-memory BFGS over one tensor, `history` pairs, one closure evaluation a step.

    Not a torch.optim.Optimizer: the first of those made in a process imports torch._dynamo, which
    every CLI run would wait for.
    """

    def __init__(self, image: Tensor, history: int = 20, bounds: tuple[float, float] | None = None):
        self.image = image
        self.bounds = bounds
        self.pairs: deque[tuple[Tensor, Tensor, Tensor]] = deque(maxlen=history)  # (s, y, 1 / s.y)
        self.inverse_curvature: Tensor | None = None  # s.y / y.D.y of the newest pair
        self.mean_square: Tensor | None = None  # running mean of g^2, per pixel
        self.previous_grad: Tensor | None = None
        self.previous_step: Tensor | None = None
        # Picture-sized vectors no longer remembered, for the next ones: on CPU, vectors made anew
        # each step land between the blocks a step's passes free, and the heap grows (docs/method.md).
        self._spare: list[Tensor] = []

    def zero_grad(self) -> None:
        # On CPU the gradient's block is kept for the same reason; a CUDA graph makes its own in its capture.
        if self.image.grad is not None and not self.image.is_cuda:
            self.image.grad.zero_()
        else:
            self.image.grad = None

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        image = self.image
        grad = image.grad.reshape(-1)
        if self.mean_square is None:
            self.mean_square = grad * grad
        else:
            self.mean_square.mul_(GRADIENT_AVERAGING).addcmul_(grad, grad, value=1 - GRADIENT_AVERAGING)
        # Floored above zero: where every gradient so far is zero (a style weight of 0 from the
        # photo itself) the step is zero, not 0 x infinity = NaN.
        diagonal = (self.mean_square + DIAGONAL_FLOOR * self.mean_square.mean()).clamp_min_(torch.finfo(grad.dtype).tiny).rsqrt_()
        if self.previous_grad is not None:
            self._remember(self.previous_step, torch.sub(grad, self.previous_grad, out=self._vector()), diagonal)
        direction = self._direction(grad, diagonal)
        if self.bounds is not None:
            # A pixel held at a bound that the step would push further out stays, and does not
            # shorten the steps of the pixels that are free to move.
            flat, (low, high) = image.view(-1), self.bounds
            direction.masked_fill_(((flat <= low) & (direction < 0)) | ((flat >= high) & (direction > 0)), 0)
        first = self.inverse_curvature is None
        scale = (FIRST_CHANGE if first else MAX_CHANGE) / direction.abs().max().clamp_min(1e-30)
        direction.mul_(scale if first else scale.clamp(max=1.0))  # a tensor factor: no sync
        if self.bounds is None:
            image.add_(direction.view_as(image))
        else:
            # Projected onto the bounds. The pair remembers the move made, not the one asked for:
            # remembering the latter stalled the iteration where pixels sat at a bound.
            flat = image.view(-1)
            moved = (flat + direction).clamp_(*self.bounds)
            torch.sub(moved, flat, out=direction)
            flat.copy_(moved)
        if self.previous_grad is None:
            self.previous_grad = torch.empty_like(grad)
        self.previous_grad.copy_(grad)
        self.previous_step = direction
        return loss

    def state_dict(self) -> dict:
        """What a later LBFGS over a picture of the same size resumes from (`load_state_dict`): the
        tensors themselves, not copies."""
        return {"pairs": [list(pair) for pair in self.pairs], "inverse_curvature": self.inverse_curvature,
                "mean_square": self.mean_square, "previous_grad": self.previous_grad, "previous_step": self.previous_step}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`'s state, on this picture's device."""
        if len(state["pairs"]) > self.pairs.maxlen:
            raise ValueError(f"{len(state['pairs'])} remembered pairs, more than this optimiser's {self.pairs.maxlen}")

        def here(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.to(self.image.device)

        self.pairs.clear()
        self.pairs.extend(tuple(here(tensor) for tensor in pair) for pair in state["pairs"])
        self.inverse_curvature, self.mean_square = here(state["inverse_curvature"]), here(state["mean_square"])
        self.previous_grad, self.previous_step = here(state["previous_grad"]), here(state["previous_step"])

    def _vector(self) -> Tensor:
        return self._spare.pop() if self._spare else torch.empty_like(self.image.view(-1))

    def _remember(self, step: Tensor, grad_change: Tensor, diagonal: Tensor) -> None:
        curvature = step.dot(grad_change)
        if curvature > CURVATURE_TOLERANCE * step.norm() * grad_change.norm():
            if len(self.pairs) == self.pairs.maxlen:
                self._spare.extend(self.pairs[0][:2])
            self.pairs.append((step, grad_change, 1 / curvature))
            self.inverse_curvature = curvature / grad_change.dot(diagonal * grad_change)
        else:
            self._spare += [step, grad_change]

    def _direction(self, grad: Tensor, diagonal: Tensor) -> Tensor:
        """-H g by the two-loop recursion, H the inverse Hessian estimate from gamma D and the remembered pairs."""
        direction = torch.neg(grad, out=self._vector())
        alphas = []
        for step, grad_change, rho in reversed(self.pairs):
            alpha = step.dot(direction) * rho
            direction.sub_(grad_change * alpha)
            alphas.append(alpha)
        direction.mul_(diagonal)
        if self.inverse_curvature is not None:
            direction.mul_(self.inverse_curvature)
        for (step, grad_change, rho), alpha in zip(self.pairs, reversed(alphas), strict=True):
            beta = grad_change.dot(direction) * rho
            direction.add_(step * (alpha - beta))
        return direction
