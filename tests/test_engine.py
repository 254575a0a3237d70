from dataclasses import replace

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nst import Settings, SettingsError, engine, images, scale_schedule, stylize
from nst.engine import _Objective, distances
from nst.vgg import load_model
from nst.weights import load_weights

FAST = Settings(size=64, steps=6, frame_interval=0.0)


def _objective(content_tensor, style_tensor):
    settings = Settings().validated()
    no_autocast = torch.autocast("cpu", enabled=False)
    return _Objective(load_model(), content_tensor, [style_tensor], settings, no_autocast)


def test_losses_are_zero_at_the_targets(content):
    tensor = images.load_tensor(content, 64, "cpu")
    terms = _objective(tensor, tensor)(tensor)
    assert terms["content"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["style"].item() == pytest.approx(0.0, abs=1e-5)


def test_gradients_reach_only_the_image(content, style):
    model = load_model()
    content_tensor = images.load_tensor(content, 64, "cpu")
    image = content_tensor.clone().requires_grad_(True)
    _objective(content_tensor, images.load_tensor(style, 64, "cpu"))(image)["total"].backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in model.parameters())


def test_weighted_terms_keep_their_ratio_across_sizes(content, style):
    """A 50/50 blend of content and style: weighted content / weighted style at 128 px vs 512 px."""
    ratios = []
    for side in (128, 512):
        content_tensor = images.load_tensor(content, side, "cpu")
        style_tensor = images.resize(images.load_tensor(style, side, "cpu"), tuple(content_tensor.shape[-2:]))
        blend = 0.5 * content_tensor + 0.5 * style_tensor
        with torch.inference_mode():
            terms = _objective(content_tensor, style_tensor)(blend)
        ratios.append(terms["content"].item() / terms["style"].item())
    assert 0.5 < ratios[0] / ratios[1] < 2.0, ratios


def test_frames_arrive_and_the_last_one_is_done(content, style):
    frames = list(stylize(content, style, FAST))
    assert [frame.step for frame in frames] == list(range(1, 7))
    assert frames[-1].done and not any(frame.done for frame in frames[:-1])
    assert set(frames[-1].losses) == {"content", "style", "tv", "total"}
    assert frames[-1].elapsed >= frames[0].elapsed > 0
    assert max(frames[-1].image.size) == 64


def test_frames_are_throttled(content, style):
    frames = list(stylize(content, style, replace(FAST, steps=20, frame_interval=3600)))
    assert [frame.step for frame in frames] == [1, 20]


def test_closing_the_generator_stops_the_work(content, style):
    run = stylize(content, style, replace(FAST, steps=50))
    next(run)
    next(run)
    before = engine.steps_taken
    run.close()
    assert engine.steps_taken == before
    with pytest.raises(StopIteration):
        next(run)


def test_same_seed_same_image_and_another_seed_another(content, style):
    settings = replace(FAST, init="noise", steps=3)
    first = list(stylize(content, style, settings))[-1].image
    again = list(stylize(content, style, settings))[-1].image
    other = list(stylize(content, style, replace(settings, seed=1)))[-1].image
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def _chroma(image: Image.Image) -> torch.Tensor:
    return images.to_tensor(image.convert("YCbCr"))[0, 1:] * 255


def test_luminance_mode_keeps_the_content_chroma(content, style):
    result = list(stylize(content, style, replace(FAST, preserve_colors="luminance", steps=10)))[-1].image
    reference = content.resize(result.size, Image.BICUBIC)
    plain = list(stylize(content, style, replace(FAST, steps=10)))[-1].image
    kept = (_chroma(result) - _chroma(reference)).abs().mean().item()
    changed = (_chroma(plain) - _chroma(reference)).abs().mean().item()
    assert kept < 2.0, kept  # grey levels of 255
    assert changed > 3 * kept


def test_histogram_matching_gives_the_style_the_content_colours(content, style):
    content_tensor = images.load_tensor(content, 64, "cpu")
    style_tensor = images.load_tensor(style, 64, "cpu")
    matched = images.match_histogram(style_tensor, content_tensor)
    content_mean = content_tensor.mean(dim=(0, 2, 3))
    assert (matched.mean(dim=(0, 2, 3)) - content_mean).abs().max() < 0.03
    assert (style_tensor.mean(dim=(0, 2, 3)) - content_mean).abs().max() > 0.1
    result = list(stylize(content, style, replace(FAST, preserve_colors="histogram")))[-1]
    assert result.done


def test_multiscale_goes_coarse_to_fine_and_ends_at_the_requested_size(content, style):
    assert scale_schedule(512, 100, True) == [(128, 53), (256, 29), (512, 18)]
    assert scale_schedule(512, 100, False) == [(512, 100)]
    assert scale_schedule(512, 2, True) == [(256, 1), (512, 1)]
    assert [side for side, _ in scale_schedule(384, 100, True)] == [128, 222, 384]
    assert scale_schedule(128, 100, True) == [(128, 100)]
    assert sum(steps for _, steps in scale_schedule(1024, 301, True)) == 301
    frames = list(stylize(content, style, replace(FAST, size=256, steps=8)))
    sides = [max(frame.size) for frame in frames]
    assert sides == sorted(sides) and sides[0] == 128 and sides[-1] == 256
    assert frames[-1].image.size == (256, 170)
    assert frames[-1].seconds_left == 0 and all(frame.seconds_left > 0 for frame in frames[:-1])


def test_time_left_counts_the_steps_of_finer_scales_as_dearer():
    # 10 steps at 128 px took 1 s: 5 more there take 0.5 s, and 5 at 256 px 0.5 s times the cost per doubling.
    expected = 0.5 + 0.5 * engine.STEP_COST_PER_DOUBLING
    assert engine.estimate_seconds_left([(128, 15), (256, 5)], 0, 10, 1.0) == pytest.approx(expected)
    assert engine.estimate_seconds_left([(128, 15), (256, 5)], 1, 5, 3.0) == 0


def test_several_styles_blend(content, style, second_style):
    frames = list(stylize(content, [style, second_style], replace(FAST, style_blend=(3, 1), steps=2)))
    assert frames[-1].done
    with pytest.raises(SettingsError, match="style blend: give 2 values"):
        next(stylize(content, [style, second_style], replace(FAST, style_blend=(1,))))


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "steps must be a whole number from 1 to 10000"),
    ({"size": 100000}, "size must be a whole number from 32 to 2048"),
    ({"style_weight": float("nan")}, "style weight must be a number"),
    ({"content_weight": -1.0}, "content weight must be a number from 0"),
    ({"tv_weight": float("inf")}, "tv weight"),
    ({"style_layers": ()}, "at least one style layer"),
    ({"style_layers": ("relu1_1", "fc7")}, "unknown style layer 'fc7'"),
    ({"content_layer": "relu6_1"}, "unknown content layer"),
    ({"style_layer_weights": (0.0,) * 5}, "must not all be zero"),
    ({"optimizer": "sgd"}, "unknown optimizer"),
    ({"device": "tpu"}, "device"),
    ({"weights": "vgg16"}, "weights must be"),
    ({"style_scale": 0.0}, "style scale"),
])
def test_bad_settings_name_what_is_allowed(changes, message):
    with pytest.raises(SettingsError, match=message):
        replace(Settings(), **changes).validated()


def test_tiny_and_extreme_images_are_refused_or_upscaled(style):
    tiny = Image.new("RGB", (8, 8), "red")
    assert list(stylize(tiny, style, replace(FAST, steps=1)))[-1].image.size == (64, 64)
    with pytest.raises(images.ImageError, match="aspect ratio"):
        next(stylize(Image.new("RGB", (4000, 10)), style, FAST))


def test_non_finite_loss_stops_with_the_last_good_picture(content, style, tmp_path):
    # Weights scaled up a millionfold per layer overflow float32 within a few layers.
    state = {key: value * (1e6 if key.endswith("weight") else 1) for key, value in load_weights().state_dict.items()}
    save_file(state, str(tmp_path / "overflow.safetensors"))
    settings = replace(FAST, weights=str(tmp_path / "overflow.safetensors"))
    frames = list(stylize(content, style, settings))
    assert len(frames) == 1 and frames[0].done and frames[0].step == 1
    assert "NaN" in frames[0].message and "last good picture" in frames[0].message
    start = images.to_pil(images.load_tensor(content, 64, "cpu"))
    assert frames[0].image.tobytes() == start.tobytes()


def test_quality_style_distance_halves_and_content_stays(content, style):
    settings = Settings(size=128, steps=60, frame_interval=3600)
    result = list(stylize(content, style, settings))[-1].image
    reference = content.resize(result.size, Image.BICUBIC)
    before = distances(reference, content, style, settings)
    after = distances(result, content, style, settings)
    style_only = distances(images.to_pil(images.resize(images.to_tensor(style), (result.height, result.width))), content, style, settings)
    assert after["style"] < 0.5 * before["style"], (before, after)
    assert after["content"] < 0.5 * style_only["content"], (after, style_only)
