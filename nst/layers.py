"""VGG19's layers in one table: their names, and what each does to a picture's size, channels, reach
and work. Pure Python, so that settings, tiles, the time left and the bench read it without torch."""

from __future__ import annotations

from dataclasses import dataclass

BLOCK_SIZES = (2, 2, 4, 4, 4)  # 3x3 convolutions per block; each block ends in a 2x2 pooling
BLOCK_WIDTHS = (64, 128, 256, 512, 512)  # output channels of each block's convolutions


def _layer_names() -> tuple[str, ...]:
    names = []
    for block, convs in enumerate(BLOCK_SIZES, 1):
        for k in range(1, convs + 1):
            names += [f"conv{block}_{k}", f"relu{block}_{k}"]
        names.append(f"pool{block}")
    return tuple(names)


# The single table of names, in the order of torchvision's vgg19().features (37 modules).
LAYER_NAMES = _layer_names()
LAYER_INDEX = {name: index for index, name in enumerate(LAYER_NAMES)}
RELU_LAYERS = tuple(name for name in LAYER_NAMES if name.startswith("relu"))
POOLINGS = ("max", "avg")

# The mean pixel that weights trained in Caffe expect subtracted: BGR order, 0-255 units.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Layer:
    """One layer: `kind` "conv", "relu" or "pool"; `inputs` and `width`, its channels in and out;
    `stride`, input px per position of its output; `reach`, how far beyond its own input window a
    position of its output sees, in input px on either side."""

    name: str
    kind: str
    block: int
    inputs: int
    width: int
    stride: int
    reach: int


def _table() -> tuple[Layer, ...]:
    """A position i of a layer of stride S sees the input [S i + low, S i + high]: a 3x3 convolution
    widens that by S on each side, a 2x2 pooling doubles S and adds S to high."""
    table, channels, stride, low, high = [], 3, 1, 0, 0
    for name in LAYER_NAMES:
        kind, block, inputs = name[:4], int(name[4]), channels
        if kind == "conv":
            channels = BLOCK_WIDTHS[block - 1]
            low, high = low - stride, high + stride
        elif kind == "pool":
            stride, high = 2 * stride, high + stride
        table.append(Layer(name, kind, block, inputs, channels, stride, max(-low, high - stride + 1)))
    return tuple(table)


_TABLE = _table()
LAYERS = {layer.name: layer for layer in _TABLE}


def up_to(deepest: str) -> tuple[Layer, ...]:
    """The layers a pass to `deepest` runs, in order."""
    return _TABLE[: LAYER_INDEX[deepest] + 1]


def channels_per_pixel(deepest: str) -> float:
    """Channels per input pixel that a pass to `deepest` computes (its ReLUs work in place): its
    work, and its activations' size."""
    total = 0.0
    for layer in up_to(deepest):
        if layer.kind != "relu":
            total += layer.width / layer.stride**2
    return total


def conv_work(height: int, width: int, deepest: str) -> float:
    """Multiply-adds of the forward convolutions of a pass to `deepest` over a `height` x `width`
    picture (the gradient to the input costs about as much again)."""
    work = 0.0
    for layer in up_to(deepest):
        if layer.kind == "conv":
            work += (height // layer.stride) * (width // layer.stride) * layer.inputs * layer.width * 9
    return work
