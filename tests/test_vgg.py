import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nst.layers import LAYER_NAMES, RELU_LAYERS
from nst.vgg import VGG19Features, load_model
from nst.weights import load_weights


def test_layer_table_matches_torchvision_vgg19_features():
    from torchvision.models import vgg19

    reference = vgg19().features
    assert len(LAYER_NAMES) == len(reference) == 37
    kinds = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.MaxPool2d: "pool"}
    for name, module in zip(LAYER_NAMES, reference):
        assert name.startswith(kinds[type(module)])
    assert LAYER_NAMES[22] == "relu4_2" and LAYER_NAMES[29] == "relu5_1" and LAYER_NAMES[36] == "pool5"
    assert len(RELU_LAYERS) == 16


def test_model_is_frozen_and_shared():
    model = load_model()
    assert model is load_model()
    assert not model.training
    assert all(not parameter.requires_grad for parameter in model.parameters())


def test_extractor_stops_at_the_deepest_requested_layer():
    model = load_model()
    ran = []
    hooks = [module.register_forward_hook(lambda m, i, o, index=index: ran.append(index)) for index, module in enumerate(model.layers)]
    try:
        features = model(torch.rand(1, 3, 64, 64), ["relu1_1", "relu3_1"])
    finally:
        for hook in hooks:
            hook.remove()
    assert set(features) == {"relu1_1", "relu3_1"}
    # conv1_1 ... relu3_1, nothing after; relu1_2 and relu2_2 rectify the pooled maps instead
    assert ran == [index for index in range(12) if index not in (3, 8)]
    assert features["relu3_1"].shape == (1, 256, 16, 16)


def test_requested_conv_output_is_not_overwritten_by_the_inplace_relu():
    model = load_model()
    features = model(torch.rand(1, 3, 32, 32), ["conv1_1", "relu1_1"])
    assert (features["conv1_1"] < 0).any()
    assert torch.equal(features["relu1_1"], features["conv1_1"].clamp_min(0))


def test_features_and_pixel_gradients_match_the_plain_layer_stack():
    model = load_model()
    image = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    wanted = ["relu1_1", "pool1", "relu3_1", "relu4_2"]
    pixels = image.clone().requires_grad_(True)
    features = model(pixels, wanted)
    (gradient,) = torch.autograd.grad(sum((value**2).sum() for value in features.values()), pixels)

    reference_pixels = image.clone().requires_grad_(True)
    x, reference = model.normalise(reference_pixels), {}
    for name, module in zip(LAYER_NAMES, model.layers):
        x = torch.relu(x) if isinstance(module, nn.ReLU) else module(x)
        if name in wanted:
            reference[name] = x
        if name == "relu4_2":
            break
    (reference_gradient,) = torch.autograd.grad(sum((value**2).sum() for value in reference.values()), reference_pixels)
    for name in wanted:
        torch.testing.assert_close(features[name], reference[name], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gradient, reference_gradient, rtol=1e-4, atol=1e-3 * reference_gradient.abs().max().item())


def test_caffe_normalisation_is_bgr_0_255_minus_mean():
    model = load_model()
    image = torch.zeros(1, 3, 2, 2)
    image[:, 0] = 1.0  # pure red
    normalised = model.normalise(image)
    assert normalised[0, :, 0, 0].tolist() == pytest.approx([-103.939, -116.779, 255 - 123.68])


def test_average_pooling_averages_each_2x2_block():
    weights = load_weights()
    averaged, maximum = VGG19Features(weights, pooling="avg"), VGG19Features(weights, pooling="max")
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        features = averaged(image, ["relu1_2", "pool1", "relu2_1"])
        torch.testing.assert_close(features["pool1"], F.avg_pool2d(features["relu1_2"], 2))
        assert not torch.allclose(features["relu2_1"], maximum(image, ["relu2_1"])["relu2_1"])
