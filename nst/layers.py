"""VGG19's layers as a table: their names in the order of torchvision's vgg19().features, and the
width of each block. Pure Python, so that declaring settings needs no network."""

BLOCK_SIZES = (2, 2, 4, 4, 4)  # convolutions per block
BLOCK_WIDTHS = (64, 128, 256, 512, 512)  # channels of each block's convolutions


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
