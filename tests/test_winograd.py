import pytest
import torch
import torch.nn.functional as F

from nst import winograd
from nst.engine import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS
from nst.vgg import load_model


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).detach().abs().max() / expected.detach().abs().max())


@pytest.mark.parametrize("band_bytes", [winograd.BAND_BYTES, 1])  # 1: one tile row per band
@pytest.mark.parametrize("shape", [(8, 16, 13, 17), (16, 8, 4, 4), (8, 8, 1, 9), (16, 16, 21, 32), (8, 8, 12, 8)])
def test_convolution_and_its_input_gradient_match_torch(shape, band_bytes, monkeypatch):
    monkeypatch.setattr(winograd, "BAND_BYTES", band_bytes)
    channels, out_channels, height, width = shape
    generator = torch.Generator().manual_seed(sum(shape))
    weight = torch.randn(out_channels, channels, 3, 3, generator=generator)
    bias = torch.randn(out_channels, generator=generator)
    x = torch.randn(1, channels, height, width, generator=generator).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    expected = F.conv2d(x, weight, bias, padding=1)
    upstream = torch.randn(expected.shape, generator=generator)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)

    got = winograd.frozen_convolution(x, winograd.transform_filters(weight), bias)
    (got_grad,) = torch.autograd.grad(got, x, upstream)

    assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(got, expected) < 1e-5
    assert relative_error(got_grad, expected_grad) < 1e-5


def test_gradient_accepts_a_plain_contiguous_upstream_gradient():
    weight = torch.randn(6, 4, 3, 3)
    upstream = torch.randn(1, 6, 10, 7)  # NCHW, not channels-last
    x = torch.randn(1, 4, 10, 7, requires_grad=True)
    (expected,) = torch.autograd.grad(F.conv2d(x, weight, padding=1), x, upstream)
    got = winograd.convolve_transposed(upstream, winograd.transform_filters(weight))
    assert relative_error(got, expected) < 1e-5


def test_vgg_features_and_pixel_gradients_agree_with_direct_convolutions():
    model = load_model()
    image = torch.rand(1, 3, 96, 72, generator=torch.Generator().manual_seed(3))
    layers = set(DEFAULT_STYLE_LAYERS) | {DEFAULT_CONTENT_LAYER}
    results = {}
    for fast in (False, True):
        pixels = image.clone().requires_grad_(True)
        features = model(pixels, layers, winograd=fast)
        loss = sum((value**2).mean() for value in features.values())
        (gradient,) = torch.autograd.grad(loss, pixels)
        results[fast] = features, gradient
    for layer in layers:
        assert relative_error(results[True][0][layer], results[False][0][layer]) < 1e-4, layer
    # Through sixteen layers back to the pixels, float32 rounding adds up to about 1e-4 here.
    assert relative_error(results[True][1], results[False][1]) < 1e-3
    assert model._winograd_filters, "the wide layers ran by Winograd"
    assert not any(filters.requires_grad or filters.is_inference() for filters in model._winograd_filters.values())
