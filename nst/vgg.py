"""VGG19's convolutional part as a frozen feature extractor with named layers."""

from __future__ import annotations

import functools
from collections.abc import Collection

import torch
from torch import Tensor, nn

from .layers import BLOCK_WIDTHS, LAYER_INDEX, LAYER_NAMES, POOLINGS
from .layers import RELU_LAYERS as RELU_LAYERS  # where the tests look for it
from .winograd import frozen_convolution, transform_filters
from .weights import CAFFE, Weights, load_weights


# Input normalisation per weight convention, for an RGB image in [0, 1]: channel order, scale, mean.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """torchvision's vgg19().features with loaded weights, frozen, in eval mode.

    `forward(image, layers)` returns the activations at the named layers and runs no module past
    the deepest of them. ReLUs work in place, except right after a requested conv layer, whose
    output must survive; one right before max pooling rectifies the pooled map instead. With
    `winograd=True`, on CPU in float32 or float64, the wide convolutions run by Winograd's algorithm (see
    `nst.winograd`), whose transformed filters are made on first use.
    """

    def __init__(self, weights: Weights, pooling: str = "max"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        modules: list[nn.Module] = []
        channels = 3
        for name in LAYER_NAMES:
            if name.startswith("conv"):
                width = BLOCK_WIDTHS[int(name[4]) - 1]
                modules.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
                channels = width
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=True))
            else:
                modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        self.layers = nn.Sequential(*modules)
        self.layers.load_state_dict(weights.state_dict, strict=True)
        self.requires_grad_(False)
        self.eval()
        self.convention = weights.convention
        self.source = weights.source
        self.pooling = pooling
        if weights.convention == CAFFE:
            self.bgr, scale, mean = True, torch.full((3,), 255.0), torch.tensor(_CAFFE_BGR_MEAN)
        else:
            self.bgr, scale = False, 1.0 / torch.tensor(_IMAGENET_STD)
            mean = torch.tensor(_IMAGENET_MEAN) * scale
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self._winograd_filters: dict[int, Tensor] = {}

    def normalise(self, image: Tensor) -> Tensor:
        """RGB in [0, 1] -> the input convention of the weights."""
        # flip, not a fancy index, which would copy an index tensor to the device: CUDA graphs cannot capture that
        return (image.flip(1) if self.bgr else image) * self.scale - self.mean

    def forward(self, image: Tensor, layers: Collection[str], winograd: bool = False) -> dict[str, Tensor]:
        wanted = set(layers)
        last = max(LAYER_INDEX[name] for name in wanted)
        x = self.normalise(image)
        features = {}
        keep_previous = rectify_pooled = False
        for index in range(last + 1):
            module = self.layers[index]
            if (isinstance(module, nn.ReLU) and LAYER_NAMES[index] not in wanted
                    and isinstance(self.layers[index + 1], nn.MaxPool2d)):
                # Max pooling commutes with ReLU, also in its gradient: rectify the pooled map,
                # a quarter of the size, instead.
                rectify_pooled = True
            elif rectify_pooled:
                x = torch.relu_(module(x))
                rectify_pooled = False
            elif keep_previous and isinstance(module, nn.ReLU):
                x = torch.relu(x)
            elif winograd and isinstance(module, nn.Conv2d) and self._by_winograd(module, x):
                x = frozen_convolution(x, self._filters(index), module.bias)
            else:
                x = module(x)
            keep_previous = LAYER_NAMES[index] in wanted
            if keep_previous:
                features[LAYER_NAMES[index]] = x
        return features

    @staticmethod
    def _by_winograd(conv: nn.Conv2d, x: Tensor) -> bool:
        # Faster than oneDNN from 128 input and 256 output channels on; on the narrower layers the
        # transforms outweigh the saved products (docs/method.md).
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled("cpu")
                and conv.in_channels >= 128 and conv.out_channels >= 256)

    def _filters(self, index: int) -> Tensor:
        if index not in self._winograd_filters:
            # Made once and kept for later passes, which may track gradients: never an inference tensor.
            with torch.inference_mode(False), torch.no_grad():
                self._winograd_filters[index] = transform_filters(self.layers[index].weight)
        return self._winograd_filters[index]


@functools.lru_cache(maxsize=4)
def load_model(weights: str = "embedded", pooling: str = "max", device: str = "cpu") -> VGG19Features:
    """One model per (weights, pooling, device) and process: built on first use, then shared."""
    model = VGG19Features(load_weights(weights), pooling).to(torch.device(device))
    return model.to(memory_format=torch.channels_last)
