import pytest
import torch

from nst import lbfgs
from nst.lbfgs import LBFGS


def quadratic(scale: float, size: int = 400):
    """scale * 1/2 sum a_i (x_i - b_i)^2 with curvatures a from 1 to 100, minimum at b."""
    generator = torch.Generator().manual_seed(0)
    curvatures = torch.logspace(0, 2, size)
    target = torch.rand(size, generator=generator) * 0.5 + 0.25
    return lambda x: scale * 0.5 * (curvatures * (x - target) ** 2).sum(), target


def iterates(scale: float, steps: int, start: torch.Tensor) -> list[torch.Tensor]:
    loss_of, _ = quadratic(scale, start.numel())
    x = start.clone().requires_grad_(True)
    optimizer = LBFGS(x, history=10)

    def closure():
        optimizer.zero_grad()
        loss = loss_of(x)
        loss.backward()
        return loss

    seen = []
    for _ in range(steps):
        optimizer.step(closure)
        seen.append(x.detach().clone())
    return seen


def test_converges_on_an_ill_conditioned_quadratic():
    start = torch.full((400,), 0.5)
    _, target = quadratic(1.0)
    path = iterates(1.0, 60, start)
    # Gradient descent with the best fixed step would still be at about half the starting error.
    assert (path[-1] - target).abs().max() < 1e-3 * (start - target).abs().max()


def test_steps_do_not_depend_on_the_scale_of_the_loss():
    # torch's LBFGS(max_iter=1) does: its first step is 1 / sum|g| and it drops pairs with s.y < 1e-10,
    # so a small loss crawled and then took the raw gradient as a step.
    start = torch.full((400,), 0.5)
    small, large = iterates(1e-9, 15, start), iterates(1e6, 15, start)
    for a, b in zip(small, large, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_first_step_and_every_step_are_bounded_in_pixel_units():
    start = torch.full((400,), 0.5)
    path = iterates(1.0, 8, start)
    assert (path[0] - start).abs().max().item() == pytest.approx(lbfgs.FIRST_CHANGE, rel=1e-5)
    changes = [(b - a).abs().max().item() for a, b in zip(path, path[1:])]
    assert max(changes) <= lbfgs.MAX_CHANGE + 1e-6
    assert max(changes) > lbfgs.FIRST_CHANGE  # later steps follow the curvature, not the first bound


def test_first_step_moves_pixels_with_small_gradients_about_as_far():
    # The diagonal scaling 1 / sqrt(mean g^2): a plain first step -g would move the pixel with the
    # smallest gradient here 100 times less than the one with the largest.
    _, target = quadratic(1.0)
    start = target + 0.1  # gradients 0.1 ... 10
    moves = (iterates(1.0, 1, start)[0] - start).abs()
    assert moves.max().item() == pytest.approx(lbfgs.FIRST_CHANGE, rel=1e-5)
    assert moves.min() > 0.5 * moves.max()
