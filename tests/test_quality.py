"""The defaults keep the photo and take the painting, measured beside the textbook anchor (nst.quality).

A later speed change cannot quietly trade the photo away: at 128 px, on two panel pairs whose
paintings hold objects of their own, our default picture must stay at least as close to the photo
as jcjohnson/neural-style's recipe while taking the painting. The defaults are chosen at 512 px,
where they come within 10% of the anchor's style distance or closer (docs/quality.md); at 128 px, one
scale and 80 steps, they paint more lightly than the anchor (1.32x and 0.99x its style distance when
chosen, content 0.46x and 0.43x), so the style side here allows 1.6x, and the content side asks for
at least 0.3x the anchor's: painted, not left the photo.
"""

import copy
import json
from dataclasses import replace

import numpy
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nst import Settings, distances, images, quality
from nst.objective import YARDSTICK
from nst.quality import picture_path
from nst.settings import DEFAULT_CONTENT_LAYER, DEFAULT_LAYER_WEIGHTS, DEFAULT_STYLE_LAYERS
from nst.vgg import load_model

from .conftest import EXAMPLES

SIZE = 128
# The anchor's distances at 128 px (300 L-BFGS steps, 3-4 minutes a pair on two cores, so measured once
# rather than in every run): python -m nst.quality --size 128 --anchor-only --pairs hopper-klimt_kiss tiger-vitruvian
ANCHOR_AT_128 = {
    ("hopper", "klimt_kiss"): {"content": 0.483, "style": 0.1319},
    ("tiger", "vitruvian"): {"content": 0.537, "style": 0.1461},
}


@pytest.mark.parametrize("content, style", ANCHOR_AT_128)
def test_the_defaults_keep_the_photo_and_take_the_painting_beside_the_anchor(content, style):
    photo, painting = images.open_image(picture_path(content)), images.open_image(picture_path(style))
    anchor = ANCHOR_AT_128[content, style]
    picture = quality.ours(photo, painting, Settings(size=SIZE))
    ours = quality.judge(picture, photo, painting)
    unpainted = quality.judge(photo.resize(picture.size, Image.Resampling.BICUBIC), photo, painting)  # where a run starts
    print(content, style, "anchor", anchor, "ours", ours, "the photo itself", unpainted)
    # the photo kept at least as well as the anchor keeps it, yet painted over: measurably away from it
    # (the stored figures hold as long as distances() keeps its scale, which the test below pins)
    assert 0.3 * anchor["content"] <= ours["content"] <= anchor["content"]
    # the painting taken: most of the way from the photo itself, and near as far as the anchor takes it
    assert ours["style"] <= 0.5 * unpainted["style"] and ours["style"] <= 1.6 * anchor["style"]


def test_the_quality_benchmark_writes_its_table_sheet_and_figures_per_split(tmp_path):
    assert quality.main(["--size", "64", "--split", "validation", "--pairs", "coffee-hiroshige_fish", "--anchor-steps", "5",
                         "--set", "steps=5", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results-validation-ours.json").read_text())
    record = results["pairs"][0]
    assert record["pair"] == "coffee-hiroshige_fish" and record["anchor"]["steps"] == 5
    assert {"content", "style", "seconds"} <= set(record["ours"]) and {"content", "style", "seconds"} <= set(record["anchor"])
    table = (tmp_path / "table-validation-ours.md").read_text()
    assert "| coffee-hiroshige_fish |" in table and results["rules"] in table and "of 1 pairs" in results["rules"]
    assert (tmp_path / "contact-sheet-validation-ours.png").stat().st_size > 10_000


def test_the_splits_share_no_picture():
    panel = {name for pair in quality.PANEL for name in (pair.content, pair.style)}
    validation = {name for pair in quality.VALIDATION for name in (pair.content, pair.style)}
    assert len(quality.VALIDATION) >= 10 and len(validation) == 2 * len(quality.VALIDATION)
    assert not panel & validation and all(picture_path(name).parent.name == "validation" for name in validation)


def _relative_errors_in_float64(picture: Image.Image, content: Image.Image, style: Image.Image) -> dict[str, float]:
    """What distances() is made of, from its definitions, in float64: at relu4_2 sum (F - P)^2 / sum P^2;
    at each of relu1_1 ... relu5_1 sum (G - A)^2 / sum A^2, G and A the Gram matrices per position.
    The content is resized to the picture's size, the style to its long side (bicubic, antialiased)."""
    model = copy.deepcopy(load_model()).double()

    def features(image: Image.Image, size: tuple[int, int], layers) -> dict[str, torch.Tensor]:
        pixels = torch.from_numpy(numpy.asarray(image, dtype=numpy.float64) / 255).permute(2, 0, 1).unsqueeze(0)
        if size != (image.height, image.width):
            pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        with torch.no_grad():
            return model(pixels, layers)

    def gram(feature: torch.Tensor) -> torch.Tensor:
        matrix = feature[0].reshape(feature.shape[1], -1)
        return matrix @ matrix.T / matrix.shape[1]

    size = (picture.height, picture.width)
    ours = features(picture, size, [*DEFAULT_STYLE_LAYERS, DEFAULT_CONTENT_LAYER])
    photo = features(content, size, [DEFAULT_CONTENT_LAYER])[DEFAULT_CONTENT_LAYER]
    scale = max(size) / max(style.size)
    painting = features(style, (round(style.height * scale), round(style.width * scale)), DEFAULT_STYLE_LAYERS)
    errors = {DEFAULT_CONTENT_LAYER: float((ours[DEFAULT_CONTENT_LAYER] - photo).pow(2).sum() / photo.pow(2).sum())}
    for layer in DEFAULT_STYLE_LAYERS:
        target = gram(painting[layer])
        errors[layer] = float((gram(ours[layer]) - target).pow(2).sum() / target.pow(2).sum())
    return errors


def test_distances_are_the_documented_relative_errors_measured_in_float64():
    # Another picture than the photo, so that neither distance is a small difference of large sums.
    picture = images.open_image(EXAMPLES / "graf1.jpg").resize((96, 64), Image.Resampling.BICUBIC)
    content, style = images.open_image(EXAMPLES / "chelsea.jpg"), images.open_image(EXAMPLES / "starry_night.jpg")
    errors = _relative_errors_in_float64(picture, content, style)

    def expected(weights: tuple[float, ...]) -> dict[str, float]:  # the layer weights normalised to sum 1
        style_distance = sum(weight / sum(weights) * errors[layer] for layer, weight in zip(DEFAULT_STYLE_LAYERS, weights, strict=True))
        return {"content": errors[DEFAULT_CONTENT_LAYER], "style": style_distance}

    # float32 against float64: within 7e-7 here, also on AVX2 code paths; rel=1e-4 leaves over 100x.
    # On the CPU, as a GPU's convolutions may run in TF32 (a 10-bit mantissa), which would not hold to it.
    on_cpu = replace(YARDSTICK, device="cpu")
    measured = distances(picture, content, style, on_cpu)
    assert measured == pytest.approx(expected((1, 1, 1, 1, 1)), rel=1e-4)
    assert distances(picture, content, style, replace(on_cpu, style_layer_weights=(1, 0, 0, 0, 3))) == pytest.approx(
        expected((1, 0, 0, 0, 3)), rel=1e-4)
    # By default, the yardstick docs/quality.md's figures are read with, not the optimised layer weights.
    assert distances(picture, content, style) == pytest.approx(measured, rel=1e-2)
    assert expected(tuple(DEFAULT_LAYER_WEIGHTS.values()))["style"] != pytest.approx(measured["style"], rel=1e-2)


def test_the_rules_count_each_rule_on_hand_made_rows():
    def row(pair: str, ours: tuple[float, float] | None, anchor: tuple[float, float] | None) -> dict:
        record = {"pair": pair}
        for label, figures in (("ours", ours), ("anchor", anchor)):
            if figures:
                record[label] = {"content": figures[0], "style": figures[1], "seconds": 1.0}
        return record

    records = [
        row("both-closer", (0.30, 0.090), (0.40, 0.100)),  # kept, taken
        row("both-level", (0.40, 0.105), (0.40, 0.100)),  # kept (equal), taken (1.05x, within 10%)
        row("photo-lost", (0.41, 0.050), (0.40, 0.100)),  # not kept, taken
        row("painting-short", (0.20, 0.120), (0.40, 0.100)),  # kept, not taken (1.2x)
        row("painting-short-too", (0.39, 0.115), (0.40, 0.100)),  # kept, not taken (1.15x)
        row("neither", (0.50, 0.200), (0.40, 0.100)),  # not kept, not taken
        row("no-anchor", (0.10, 0.010), None),  # not judged
        row("anchor-only", None, (0.40, 0.100)),  # not judged
    ]
    # kept: 4 (both-closer, both-level, painting-short, painting-short-too); taken: 3 (both-closer,
    # both-level, photo-lost); both: 2 (both-closer, both-level); judged: 6
    assert quality.rules(records, "ours") == ("content <= the anchor's on 4 of 6 pairs; style <= 1.1x the anchor's on 3; "
                                              "both on 2")
