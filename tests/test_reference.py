"""The textbook loop (nst.reference) that the bench times and the quality panel's anchor paints with."""

import torch

from nst import images, reference
from nst.vgg import load_model

from .conftest import EXAMPLES


def ill_conditioned(x: torch.Tensor) -> torch.Tensor:
    """A quadratic with curvatures from 1 to 48, plus a quartic: L-BFGS's history and step length tell."""
    curvature = torch.arange(1, x.numel() + 1, dtype=x.dtype).reshape(x.shape)
    return (curvature * (x - 0.5).pow(2)).sum() + x.pow(4).sum()


def test_each_step_is_one_iteration_of_lbfgs_as_neural_style_runs_it():
    # neural-style's optim.lbfgs: 100 pairs of history, no line search, no stopping tolerance, which
    # torch's LBFGS runs in one call of 6 iterations (from 4 iterations on, its evaluation cap allows them all)
    start = torch.linspace(-1, 1, 48, dtype=torch.float64).reshape(1, 3, 4, 4)
    whole = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([whole], max_iter=6, history_size=100, tolerance_grad=-1, tolerance_change=-1)

    def closure():
        optimizer.zero_grad()
        loss = ill_conditioned(whole)
        loss.backward()
        return loss

    optimizer.step(closure)
    stepped = start.clone().requires_grad_(True)
    steps = reference.lbfgs_steps(stepped, lambda: ill_conditioned(stepped))
    pictures = [next(steps).detach().clone() for _ in range(6)]
    assert torch.equal(pictures[-1], whole.detach())
    assert not torch.equal(pictures[-2], pictures[-1])  # every next() is an iteration
    assert float(ill_conditioned(pictures[-1])) < 0.1 * float(ill_conditioned(start))


def test_caffe_units_are_those_the_network_reads_and_back():
    model = load_model()  # the embedded weights: Caffe's convention
    picture = images.load_tensor(images.open_image(EXAMPLES / "chelsea.jpg"), 64, "cpu")
    mean = reference.caffe_mean("cpu")
    caffe = reference.to_caffe(picture, mean)
    # the network's own normalisation: the same function, up to float32 rounding of values up to 255
    assert torch.allclose(caffe, model.normalise(picture), rtol=0, atol=255 * 2**-23)
    assert torch.allclose(reference.to_rgb(caffe, mean), picture, rtol=0, atol=2**-20)
