"""Exact tiles (nst/tiles.py): the tiled loss and gradient against the whole picture's.

Errors are measured against a float64 whole-picture reference (shared/DESIGN.md: floating point
differs between CPUs). Measured on a Xeon with AVX-512 (largest error / largest value of the pixel
gradient): in float64 the tiles agree with the whole picture to 5e-16 with direct convolutions and
4e-15 with Winograd's (which differs from the direct path by as much); in float32 both paths are
within 2e-6 of float64 in the loss, and within 1e-6 (direct) or 2.2e-4 (Winograd) in the gradient's
norm, tiled and whole alike: a unit near a ReLU or max-pooling kink moves its share of the gradient
to another pixel on one path and not the other (tests/test_winograd.py).
"""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nst import Settings, SettingsError, distances, images, memory, stylize, tiles
from nst.cli import main as cli
from nst.memory import lbfgs_history
from nst.run import scale_settings
from nst.objective import Look, Objective
from nst.runtime import Runtime, cpu_has_fast_bf16
from nst.vgg import VGG19Features, load_model
from nst.weights import load_weights

from .conftest import EXAMPLES, ROOT, guided_style_term

FLOAT64_BOUND = 1e-12
FLOAT32_LOSS_BOUND = 1e-5
FLOAT32_GRADIENT_BOUND = 1e-3  # relative to the gradient's norm


def _evaluate(model, content, styles, mask, settings, winograd, tile, dtype, precision="fp32"):
    settings = replace(settings, tile=tile).validated(style_count=len(styles))
    runtime = Runtime(torch.device("cpu"), precision, winograd, False)
    objective = Objective(model, content.to(dtype), [style.to(dtype) for style in styles], settings, runtime,
                          None if mask is None else mask.to(dtype))
    assert (objective.tiles is None) == (tile == "off")
    image = _picture(content).to(dtype).requires_grad_(True)
    terms = objective.loss_and_gradient(image)
    return {name: float(value.detach()) for name, value in terms.items()}, image.grad.double()


def _picture(content):
    return (content + 0.1 * torch.randn(content.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)


def _loss_error(terms, expected):
    return max(abs(terms[name] - expected[name]) / abs(expected[name]) for name in expected if expected[name])


def _pictures(content, style, second_style, size, masked):
    """The photo cropped to `size` (height, width), the styles at 128 px, and a mask with a soft vertical edge, left white."""
    height, width = size
    tensor = images.load_tensor(content, max(width, round(height * 1.5)), "cpu")[..., :height, :width].contiguous()
    styles = [images.load_tensor(style, 128, "cpu"), images.load_tensor(second_style, 128, "cpu")][: 2 if masked == "two styles" else 1]
    mask = None
    if masked:
        mask = torch.zeros(1, 1, height, width)
        mask[..., : width // 2] = 1
        mask = F.avg_pool2d(mask, 9, 1, 4, count_include_pad=False)
    return tensor, styles, mask


# Small pictures, for float64 convolutions are slow: tiles of 64 px with margins of 80 px (40 at a coarse scale).
CASES = {  # (height, width), tile, winograd, mask, settings
    "content, style and tv; 4 tiles in a row": ((64, 224), "64", False, None, Settings(tv_weight=0.5)),
    "Winograd; a mask and two styles; 2 x 2 tiles": ((96, 128), "64", True, "two styles", Settings()),
    "a mask and one style; a coarse scale's layers; 2 x 3 tiles": ((96, 192), "64", False, "one style",
                                                                   scale_settings(Settings(tv_weight=2.0).validated(), all_layers=False)),
}


@pytest.mark.parametrize("case", CASES)
def test_tiles_give_the_whole_pictures_loss_and_gradient_in_float64(case, model64, content, style, second_style):
    size, tile, winograd, masked, settings = CASES[case]
    tensor, styles, mask = _pictures(content, style, second_style, size, masked)
    expected, expected_gradient = _evaluate(model64, tensor, styles, mask, settings, False, "off", torch.float64)
    if mask is not None:  # the whole picture's style term is the guided one, or both could leave the mask out alike
        whole = replace(settings, tile="off").validated(style_count=len(styles))
        with torch.no_grad():
            guided = float(guided_style_term(model64, tensor.double(), [style.double() for style in styles], mask.double(), whole,
                                             _picture(tensor).double()))
        assert abs(expected["style"] - guided) <= FLOAT64_BOUND * guided, (expected["style"], guided)
    terms, gradient = _evaluate(model64, tensor, styles, mask, settings, winograd, tile, torch.float64)
    assert _loss_error(terms, expected) <= FLOAT64_BOUND
    assert float((gradient - expected_gradient).abs().max() / expected_gradient.abs().max()) <= FLOAT64_BOUND


def test_a_prints_look_adds_its_loss_and_gradient_to_the_tiles_as_to_the_whole_picture(model64, content, style):
    # The look (nst.objective.Look) reads the whole picture smaller: the tiled path evaluates it apart.
    tensor, styles, _ = _pictures(content, style, style, (96, 192), None)
    tensor, styles, small = tensor.double(), [style.double() for style in styles], (64, 128)
    runtime = Runtime(torch.device("cpu"), "fp32", False, False)
    look = Look(Objective(model64, images.resize(tensor, small), styles, Settings().validated(), runtime), small)
    results = {}
    for tile in ("off", "64"):
        objective = Objective(model64, tensor, styles, replace(Settings(), tile=tile).validated(), runtime, look=look)
        image = _picture(tensor).requires_grad_(True)
        terms = objective.loss_and_gradient(image)
        results[tile] = {name: float(value.detach()) for name, value in terms.items()}, image.grad
    (whole, whole_gradient), (tiled, tiled_gradient) = results["off"], results["64"]
    assert whole["look"] > 0.2 * whole["total"]  # a real share of the total
    assert _loss_error(tiled, whole) <= FLOAT64_BOUND
    assert float((tiled_gradient - whole_gradient).abs().max() / whole_gradient.abs().max()) <= FLOAT64_BOUND


def test_tiles_in_float32_are_as_close_to_float64_as_the_whole_picture(model64, content, style, second_style):
    tensor, styles, mask = _pictures(content, style, second_style, (128, 192), "one style")
    settings = Settings(tv_weight=0.5)
    expected, expected_gradient = _evaluate(model64, tensor, styles, mask, settings, False, "off", torch.float64)
    model = VGG19Features(load_weights("embedded")).to(memory_format=torch.channels_last)
    for tile in ("off", "64"):
        terms, gradient = _evaluate(model, tensor, styles, mask, settings, True, tile, torch.float32)
        assert _loss_error(terms, expected) <= FLOAT32_LOSS_BOUND, tile
        assert float((gradient - expected_gradient).norm() / expected_gradient.norm()) <= FLOAT32_GRADIENT_BOUND, tile


def test_tiles_in_bfloat16_are_as_close_to_float64_as_the_whole_picture_in_bfloat16(model64, content, style, second_style):
    # bf16's rounding (2^-8) dwarfs what tiling changes: a tiled evaluation may be no farther from
    # float64 than twice the whole picture's own bf16 error, measured here on the CPU that runs it.
    if not cpu_has_fast_bf16():
        pytest.skip("bf16 is emulated on this CPU (a minute here); `auto` runs fp32 on it, which the float32 test covers")
    tensor, styles, mask = _pictures(content, style, second_style, (128, 192), "one style")
    settings = Settings(tv_weight=0.5)
    expected, expected_gradient = _evaluate(model64, tensor, styles, mask, settings, False, "off", torch.float64)
    model = VGG19Features(load_weights("embedded")).to(memory_format=torch.channels_last)
    errors = {}
    for tile in ("off", "64"):
        terms, gradient = _evaluate(model, tensor, styles, mask, settings, False, tile, torch.float32, "bf16")
        errors[tile] = (_loss_error(terms, expected), float((gradient - expected_gradient).norm() / expected_gradient.norm()))
    (whole_loss, whole_gradient), (tiled_loss, tiled_gradient) = errors["off"], errors["64"]
    assert 0 < whole_loss < 0.05 and 0 < whole_gradient < 0.2, errors  # bf16 ran, and is near float64
    assert tiled_loss <= 2 * whole_loss and tiled_gradient <= 2 * whole_gradient, errors


def test_a_picture_made_in_tiles_is_the_whole_pictures_without_a_seam(content, style):
    settings = Settings(size=128, steps=10, frame_interval=3600, precision="fp32")
    made = {tile: numpy.asarray(list(stylize(content, style, replace(settings, tile=tile)))[-1].image, dtype=numpy.float64) / 255
            for tile in ("off", "64")}
    difference = numpy.abs(made["64"] - made["off"]).mean(axis=2)
    assert difference.mean() < 1 / 255
    plan = tiles.plan(*difference.shape, Settings().validated().style_layers, 64)
    assert len(plan) == 4
    seams = numpy.zeros(difference.shape, dtype=bool)
    for boundary in plan.rows[1:-1]:
        seams[boundary - 2: boundary + 2] = True
    for boundary in plan.columns[1:-1]:
        seams[:, boundary - 2: boundary + 2] = True
    assert difference[seams].mean() <= 1.25 * difference[~seams].mean()
    far = {tile: distances(Image.fromarray(numpy.uint8(numpy.round(picture * 255))), content, style) for tile, picture in made.items()}
    for name in ("content", "style"):
        assert abs(far["64"][name] - far["off"][name]) <= 0.02 * far["off"][name], far


def test_a_cores_gradient_keeps_the_channels_last_layout():
    # Slicing's own gradient comes back in the default layout, and adding it to the gradient flowing
    # back through the next layer took longer than the layer's convolution (docs/speed.md).
    plan = tiles.plan(300, 451, ["relu5_1"], 100)
    tile = next(iter(plan))
    top, bottom, left, right = tile.read
    leaf = torch.randn(1, 64, bottom - top, right - left).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    features = leaf * 1  # not a leaf, whose .grad autograd would lay out as the leaf anyway
    gradients = []
    features.register_hook(gradients.append)
    core = tiles.core_features(plan, tile, "relu1_1", features)
    assert core.shape[-2:] == (tile.core[1] - tile.core[0], tile.core[3] - tile.core[2]) != features.shape[-2:]
    (core * 2).sum().backward()
    assert gradients[0].is_contiguous(memory_format=torch.channels_last)
    assert gradients[0].sum() == 2 * core.numel() and gradients[0][..., core.shape[-2]:, :].abs().sum() == 0

def test_a_tiled_step_is_foretold_dearer_by_its_margins_and_first_pass():
    assert tiles.step_cost(None) == 1.0
    plan = tiles.plan(1501, 2048, ["relu4_2", "relu5_1"], 1232)  # auto's at 2048 px on CPU: 4 tiles
    assert len(plan) == 4 and tiles.step_cost(plan) == pytest.approx(tiles.TILED_PASSES * 1.193, abs=0.01)

def test_tile_cores_cover_the_picture_once_on_the_pooling_grid():
    plan = tiles.plan(300, 451, ["relu1_1", "relu4_2", "relu5_1"], 100)
    assert (plan.margin, plan.grid) == (80, 16)  # relu5_1 sees 70 px beyond its 16 px window on each side
    owner = numpy.zeros((300, 451), dtype=int)
    for tile in plan:
        top, bottom, left, right = tile.core
        assert top % 16 == 0 and left % 16 == 0 and tile.read[0] % 16 == 0 and tile.read[2] % 16 == 0
        owner[top:bottom, left:right] += 1
    assert (owner == 1).all()
    assert tiles.margin_and_grid(["relu3_1", "relu4_2"]) == (40, 8)  # a coarse scale reads less
    assert tiles.plan(300, 451, ["relu5_1"], 512) is None  # one tile is the whole picture


def test_auto_leaves_a_default_picture_whole_and_tiles_a_print_size_one(content, style):
    settings = Settings().validated()
    tensor = images.load_tensor(content, 512, "cpu")
    assert Objective(load_model(), tensor, [images.load_tensor(style, 512, "cpu")], settings, Runtime.for_settings(settings)).tiles is None
    layers = set(settings.style_layers) | {settings.content_layer}
    held = memory.held_bytes(2724, 4096, lbfgs_history(3 * 2724 * 4096), settings.content_layer)
    side = tiles.choose_tile("auto", 2724, 4096, layers, torch.device("cpu"), held)
    assert side is not None and side % 16 == 0


# tests/tile_memory.py's 512 x 768 px crop, to relu3_1, in 2 x 3 tiles of 256 px: each reads its core
# and a margin of 12 px (relu3_1 sees 10 px beyond its window, on a grid of 4), at most 268 x 280 px
# where a tile meets one border of the picture's height and none of its width.
MEMORY_PICTURE, MEMORY_TILE, MEMORY_TILE_READ, MEMORY_LAYER = (512, 768), "256", 268 * 280, "relu3_1"
# A pass to relu3_1 keeps each layer's output for the backward (convolutions', poolings'), in float32:
# 4 bytes for each of 232 channels a pixel (64 + 64 at full size, (64 + 128 + 128) / 4, (128 + 256) / 16).
WHOLE_PASS_KEPT_BYTES = 4 * 232 * math.prod(MEMORY_PICTURE)


def _evaluation_memory(tile: str) -> dict:
    """One loss and gradient in a fresh process, whose allocator policy no other test has set (tests/tile_memory.py)."""
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "tile_memory.py"), *map(str, MEMORY_PICTURE), tile],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_tiled_pass_takes_the_memory_its_tile_is_foretold_and_far_less_than_the_whole_pictures():
    tiled, whole = _evaluation_memory(MEMORY_TILE), _evaluation_memory("off")
    # What an evaluation may add to a process that holds the network and the picture's targets: the
    # pass the budget foresees, and what a run holds for the picture besides L-BFGS's history (of
    # which one evaluation makes the gradient, the rest being held already or in a run only).
    held = memory.held_bytes(*MEMORY_PICTURE, 0, MEMORY_LAYER)
    tile_pass, whole_pass = memory.pass_bytes(MEMORY_TILE_READ, MEMORY_LAYER), memory.pass_bytes(math.prod(MEMORY_PICTURE), MEMORY_LAYER)
    added = {name: result["peak"] - result["before"] for name, result in (("tiled", tiled), ("whole", whole))}
    print({name: f"{value / 2**20:.0f} MiB" for name, value in
           {**added, "tile pass": tile_pass, "whole pass": whole_pass, "held": held, "torch and network": tiled["base"]}.items()})
    assert WHOLE_PASS_KEPT_BYTES > tile_pass + held  # so a pass over the whole picture cannot pass for a tile's
    assert added["tiled"] <= tile_pass + held
    assert WHOLE_PASS_KEPT_BYTES <= added["whole"] <= whole_pass + held
    assert (tiled["tiles"], whole["tiles"]) == (6, 0)


def test_l_bfgs_history_fits_beside_a_print_size_picture():
    assert lbfgs_history(3 * 341 * 512) == 20  # nothing changes for a default picture
    assert lbfgs_history(3 * 2724 * 4096) == 5
    assert 2 * lbfgs_history(3 * 5448 * 8192) * 3 * 5448 * 8192 * 4 <= 1.5 * 2**30


def test_the_tile_takes_auto_off_or_a_side_from_64_px(capsys, tmp_path):
    assert Settings(tile=512).validated().tile == Settings(tile="512").validated().tile == "512"
    assert Settings(tile="off").validated().tile == "off"
    with pytest.raises(SettingsError, match="from 64 to 8192"):
        Settings(tile=32).validated()
    assert Settings(size=8192).validated().size == 8192
    with pytest.raises(SystemExit) as exit:
        # a small, short run, were the refusal lost: the test fails at once rather than making a 512 px picture
        cli([str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "starry_night.jpg"), "-o", str(tmp_path / "unused.png"),
             "--size", "64", "--steps", "1", "--tile", "32"])
    assert exit.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "tile must be auto or off, or a whole number from 64 to 8192, not '32'" in message
