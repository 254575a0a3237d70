"""Winograd convolutions against float64 references.

Where the errors come from, measured on an AMD EPYC with AVX2 only (also with ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2): per convolution, in float32, Winograd F(4x4, 3x3) is within 7e-6 of a
float64 reference (largest error / largest value, forward and input gradient alike), oneDNN's direct
kernels within 3e-6; neither grows with depth. The 3e-3 once seen between the two paths' pixel
gradients through the whole network is not rounding that adds up: ReLU and max pooling have kinks,
and a 1e-6 difference in one activation can put a unit on the other side of one, which moves its
share of the gradient to another pixel (seen for Winograd and for the direct path alike, within the
receptive field of one unit). So the algorithm is checked through the whole network in float64, where
no unit sits that close to a kink, and float32 rounding is checked per layer.
"""

import pytest
import torch
import torch.nn.functional as F

from nst import images, open_image, winograd
from nst.settings import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS
from nst.layers import LAYER_NAMES
from nst.vgg import VGG19Features
from nst.weights import load_weights

from .conftest import EXAMPLES

# Largest float32 error of one convolution or its input gradient, relative to the largest value:
# measured up to 6.3e-6 for Winograd on VGG19's layers (512 px photo) and 9e-6 on random data with
# 256 channels; oneDNN's direct convolution up to 3e-6.
FLOAT32_TOLERANCE = 2e-5
WIDE_CONVOLUTIONS = [index for index, name in enumerate(LAYER_NAMES) if name in
                     ("conv3_1", "conv3_2", "conv3_3", "conv3_4", "conv4_1", "conv4_2", "conv4_3", "conv4_4", "conv5_1")]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.detach().double() - expected.detach()).abs().max() / expected.detach().abs().max())


def convolution_and_gradient(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, upstream: torch.Tensor, by_winograd: bool):
    x = x.detach().clone().requires_grad_(True)
    if by_winograd:
        y = winograd.frozen_convolution(x, winograd.transform_filters(weight), bias)
    else:
        y = F.conv2d(x, weight, bias, padding=1)
    (gradient,) = torch.autograd.grad(y, x, upstream.to(y.dtype))
    return y, gradient


@pytest.mark.parametrize("band_bytes", [winograd.BAND_BYTES, 1])  # 1: one tile row per band
@pytest.mark.parametrize("shape", [(8, 16, 13, 17), (16, 8, 4, 4), (8, 8, 1, 9), (16, 16, 21, 32), (8, 8, 12, 8)])
def test_convolution_and_its_input_gradient_match_float64(shape, band_bytes, monkeypatch):
    monkeypatch.setattr(winograd, "BAND_BYTES", band_bytes)
    channels, out_channels, height, width = shape
    generator = torch.Generator().manual_seed(sum(shape))
    weight = torch.randn(out_channels, channels, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(out_channels, generator=generator, dtype=torch.float64)
    x = torch.randn(1, channels, height, width, generator=generator, dtype=torch.float64)
    upstream = torch.randn(1, out_channels, height, width, generator=generator, dtype=torch.float64)
    expected, expected_gradient = convolution_and_gradient(x, weight, bias, upstream, by_winograd=False)

    got, gradient = convolution_and_gradient(x.float().contiguous(memory_format=torch.channels_last), weight.float(), bias.float(),
                                             upstream, by_winograd=True)
    assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(got, expected) < FLOAT32_TOLERANCE
    assert relative_error(gradient, expected_gradient) < FLOAT32_TOLERANCE
    # In float64 the transforms are exact up to rounding: this is the algorithm, not the arithmetic.
    got, gradient = convolution_and_gradient(x, weight, bias, upstream, by_winograd=True)
    assert relative_error(got, expected) < 1e-12
    assert relative_error(gradient, expected_gradient) < 1e-12


def test_gradient_accepts_a_plain_contiguous_upstream_gradient():
    weight = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    upstream = torch.randn(1, 6, 10, 7, dtype=torch.float64)  # NCHW, not channels-last
    x = torch.randn(1, 4, 10, 7, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(F.conv2d(x, weight, padding=1), x, upstream)
    got = winograd.convolve_transposed(upstream, winograd.transform_filters(weight))
    assert relative_error(got, expected) < 1e-12


def test_every_wide_vgg_layer_is_within_float32_rounding_of_float64():
    """Each convolution that runs by Winograd, on the activations a real photo gives it."""
    model = VGG19Features(load_weights())
    x = model.normalise(images.load_tensor(open_image(EXAMPLES / "chelsea.jpg"), 128, "cpu")).double()
    generator = torch.Generator().manual_seed(0)
    errors = {}
    for index, (name, module) in enumerate(zip(LAYER_NAMES, model.layers)):
        if index > max(WIDE_CONVOLUTIONS):
            break
        if isinstance(module, torch.nn.Conv2d):
            upstream = torch.randn(1, module.out_channels, *x.shape[-2:], generator=generator, dtype=torch.float64)
            expected, expected_gradient = convolution_and_gradient(x, module.weight.double(), module.bias.double(), upstream, False)
            if index in WIDE_CONVOLUTIONS:
                got, gradient = convolution_and_gradient(x.float().contiguous(memory_format=torch.channels_last), module.weight,
                                                         module.bias, upstream, by_winograd=True)
                errors[name] = relative_error(got, expected), relative_error(gradient, expected_gradient)
            x = expected.detach()
        elif isinstance(module, torch.nn.ReLU):
            x = x.relu()
        else:
            x = F.max_pool2d(x, 2)
    print(errors)
    assert len(errors) == len(WIDE_CONVOLUTIONS)
    assert max(max(pair) for pair in errors.values()) < FLOAT32_TOLERANCE, errors


def test_vgg_features_and_pixel_gradients_by_winograd_equal_the_direct_ones_in_float64():
    model = VGG19Features(load_weights()).double()  # a fresh model: no transformed filters yet
    image = torch.rand(1, 3, 96, 72, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    layers = set(DEFAULT_STYLE_LAYERS) | {DEFAULT_CONTENT_LAYER}
    results = {}
    for fast in (False, True):
        pixels = image.clone().requires_grad_(True)
        features = model(pixels, layers, winograd=fast)
        loss = sum((value**2).mean() for value in features.values())
        (gradient,) = torch.autograd.grad(loss, pixels)
        results[fast] = features, gradient
        assert sorted(model._winograd_filters) == (WIDE_CONVOLUTIONS if fast else []), "Winograd ran exactly on the wide layers"
    for layer in layers:
        assert relative_error(results[True][0][layer], results[False][0][layer]) < 1e-12, layer
    assert relative_error(results[True][1], results[False][1]) < 1e-12
    assert not any(filters.requires_grad or filters.is_inference() for filters in model._winograd_filters.values())


def test_vgg_features_in_float32_are_within_rounding_of_float64():
    """Forward, the network is continuous: float32 features stay near float64 ones through every layer."""
    weights = load_weights()
    reference, model = VGG19Features(weights).double(), VGG19Features(weights)
    image = torch.rand(1, 3, 96, 72, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    layers = set(DEFAULT_STYLE_LAYERS) | {DEFAULT_CONTENT_LAYER}
    with torch.inference_mode():
        expected = reference(image, layers)
        for fast in (False, True):
            got = model(image.float(), layers, winograd=fast)
            for layer in layers:
                # measured up to 3.4e-6 (Winograd) and 1.4e-6 (direct)
                assert relative_error(got[layer], expected[layer]) < 1e-4, (fast, layer)
