import math
from dataclasses import replace

import numpy
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nst import Settings, SettingsError, distances, images, scale_schedule, stylize
from nst import run
from nst.run import scale_settings
from nst.settings import DEFAULT_STYLE_LAYERS
from nst.images import style_size
from nst.objective import LOOK_CONTENT_FACTOR, LOOK_WEIGHT, Look, Objective
from nst.runtime import Runtime, resolve_precision
from nst.schedule import style_reading_side
from nst.vgg import load_model
from nst.weights import load_weights

from .conftest import EXAMPLES

FAST = Settings(size=64, steps=6, frame_interval=0.0)


def _objective(content_tensor, style_tensor):
    settings = Settings().validated()
    return Objective(load_model(), content_tensor, [style_tensor], settings, Runtime.for_settings(replace(settings, winograd="off")))


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


def test_under_bf16_autocast_targets_and_terms_are_float32(content, style):
    settings = Settings(precision="bf16").validated()
    content_tensor = images.load_tensor(content, 64, "cpu")
    objective = Objective(load_model(), content_tensor, [images.load_tensor(style, 64, "cpu")], settings, Runtime.for_settings(settings))
    assert objective.content_target.dtype == torch.float32
    assert {gram.dtype for _, grams in objective.regions for gram in grams.values()} == {torch.float32}
    with torch.inference_mode():
        assert {term.dtype for term in objective(content_tensor).values()} == {torch.float32}


def test_the_style_presses_harder_the_stronger_the_painting_is_against_the_photo(content, style):
    """rho (nst.objective): 1 when the painting is the photo itself; larger for a flatter photo."""
    settings = Settings().validated()
    runtime = Runtime.for_settings(replace(settings, winograd="off"))
    photo, painting = images.load_tensor(content, 64, "cpu"), images.load_tensor(style, 64, "cpu")
    flat_photo = 0.3 * photo + 0.7 * photo.mean()

    def rho(photo, painting) -> float:
        pressed, relative = (Objective(load_model(), photo, [painting], settings, runtime, against_the_photo=against).betas
                             for against in (True, False))
        ratios = {pressed[key] / relative[key] for key in relative}
        assert max(ratios) == pytest.approx(min(ratios))  # one factor for every layer
        return ratios.pop()

    assert rho(photo, photo) == pytest.approx(1.0)
    assert rho(flat_photo, painting) > 1.5 * rho(photo, painting)


def test_weighted_terms_keep_their_ratio_across_sizes(content, style):
    """A 50/50 blend of content and style: weighted content / weighted style at 128 px vs 512 px.

    The terms' normalisation makes them agree within the pictures' own difference (0.90 here, the
    512 px picture holding detail the 128 px one has lost); without it they would part by the
    sixteen times the positions, or a power of it."""
    ratios = []
    for side in (128, 512):
        content_tensor = images.load_tensor(content, side, "cpu")
        style_tensor = images.resize(images.load_tensor(style, side, "cpu"), tuple(content_tensor.shape[-2:]))
        blend = 0.5 * content_tensor + 0.5 * style_tensor
        with torch.inference_mode():
            terms = _objective(content_tensor, style_tensor)(blend)
        ratios.append(terms["content"].item() / terms["style"].item())
    assert ratios[0] / ratios[1] == pytest.approx(1.0, rel=0.2), ratios


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
    steps = []
    run = stylize(content, style, replace(FAST, steps=50), on_step=lambda step, image: steps.append(step))
    next(run)
    next(run)
    assert steps == [1, 2]
    run.close()
    with pytest.raises(StopIteration):
        next(run)
    assert steps == [1, 2]


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


def _mean_colour(image: Image.Image) -> torch.Tensor:
    return images.to_tensor(image).mean(dim=(0, 2, 3))


def test_histogram_matching_gives_the_style_the_content_colours(content, style):
    content_tensor = images.load_tensor(content, 64, "cpu")
    style_tensor = images.load_tensor(style, 64, "cpu")
    matched = images.match_histogram(style_tensor, content_tensor)
    content_mean = content_tensor.mean(dim=(0, 2, 3))
    assert (matched.mean(dim=(0, 2, 3)) - content_mean).abs().max() < 0.03
    assert (style_tensor.mean(dim=(0, 2, 3)) - content_mean).abs().max() > 0.1
    # A run from noise takes its colours from the style's statistics: the content's with histogram matching.
    settings = replace(FAST, steps=30, init="noise")
    plain = list(stylize(content, style, settings))[-1].image
    kept = list(stylize(content, style, replace(settings, preserve_colors="histogram")))[-1].image
    reference = _mean_colour(content)
    assert (_mean_colour(kept) - reference).norm() < 0.5 * (_mean_colour(plain) - reference).norm()


def test_multiscale_goes_coarse_to_fine_and_ends_at_the_requested_size(content, style):
    assert scale_schedule(512, 80, True) == [(128, 45), (256, 22), (512, 13)]
    assert scale_schedule(512, 100, False) == [(512, 100)]
    assert scale_schedule(512, 2, True) == [(256, 1), (512, 1)]
    assert [side for side, _ in scale_schedule(384, 100, True)] == [128, 222, 384]
    assert scale_schedule(128, 100, True) == [(128, 100)]
    assert sum(steps for _, steps in scale_schedule(1024, 301, True)) == 301
    # a print's scales above 1024 px each take the 1024 px scale's steps, not half of them
    assert scale_schedule(4096, 80, True, aspect=1.5) == [(128, 37), (256, 18), (512, 9), (1024, 4), (2048, 4), (4096, 8)]
    # a larger picture takes a 512 px run's scales, then grows from 512 px
    assert [side for side, _ in scale_schedule(1000, 80, True)] == [128, 256, 512, 1000]
    assert [side for side, _ in scale_schedule(3000, 80, True)] == [128, 256, 512, 923, 1664, 3000]
    frames = list(stylize(content, style, replace(FAST, size=256, steps=8)))
    sides = [max(frame.size) for frame in frames]
    assert sides == sorted(sides) and sides[0] == 128 and sides[-1] == 256
    assert frames[-1].image.size == (256, 170)
    assert frames[-1].seconds_left == 0 and all(frame.seconds_left > 0 for frame in frames[:-1])


def test_a_finer_scale_starts_from_the_coarse_picture_with_the_photos_detail(content, style):
    # With no style the coarse picture stays the photo at 128 px; the finer scale adds back what the
    # 128 px copy lost, so the run ends at the photo itself, not at a blurred one.
    settings = replace(FAST, size=256, steps=4, style_weight=0.0)
    photo = images.load_tensor(content, 256, "cpu")
    result = images.to_tensor(list(stylize(content, style, settings))[-1].image)
    blurred = images.resize(images.load_tensor(content, 128, "cpu"), tuple(photo.shape[-2:]))
    assert (result - photo).abs().mean() < 0.2 * (blurred - photo).abs().mean()
    noise_start = list(stylize(content, style, replace(settings, init="noise")))[-1].image
    assert (images.to_tensor(noise_start) - photo).abs().mean() > (blurred - photo).abs().mean()


def test_coarse_scales_take_the_style_from_the_layers_above_block_4():
    defaults = Settings().validated()
    coarse = scale_settings(defaults, all_layers=False)
    assert coarse.style_layers == ("relu1_1", "relu2_1", "relu3_1")
    assert coarse.style_layer_weights == defaults.style_layer_weights[:3]  # they keep their weights
    assert scale_settings(defaults, all_layers=True) == defaults
    deep_only = Settings(style_layers=("relu4_1", "relu5_1")).validated()
    assert scale_settings(deep_only, all_layers=False) == deep_only


def test_a_prints_512_px_scale_takes_every_style_layer_as_a_512_px_run_does(content):
    photo = images.load_tensor(content, 64, "cpu")
    layers = {max(scale.size): scale.settings.style_layers for scale in run.scales(Settings(size=2048).validated(), photo, None)}
    assert layers[512] == layers[2048] == DEFAULT_STYLE_LAYERS
    assert layers[256] == layers[1024] == ("relu1_1", "relu2_1", "relu3_1")


def test_a_prints_look_reads_it_small_as_pils_lanczos_does_counting_the_photo_more(content, style):
    # Read by a blurrier filter, a print learnt strokes that only that filter averages into the small
    # picture's texture: read by Lanczos it was 1.5x farther from the painting (docs/method.md).
    picture, small = images.load_tensor(content, 256, "cpu"), (56, 84)
    by_pil = images.to_tensor(images.to_pil(picture).resize(small[::-1], Image.Resampling.LANCZOS))
    assert float((images.lanczos_shrink(picture, small) - by_pil).abs().mean()) < 0.5 / 255
    # A mirrored photo, far from the picture, so the photo's share of the look is a quarter of it.
    objective = _objective(images.resize(picture.flip(-1), small), images.load_tensor(style, 84, "cpu"))
    with torch.inference_mode():
        terms = objective(by_pil)
        expected = LOOK_WEIGHT * float(terms["total"] + (LOOK_CONTENT_FACTOR - 1) * terms["content"])
        assert float(Look(objective, small)(picture)) == pytest.approx(expected, rel=0.003)


def test_coarse_scales_read_the_painting_at_half_the_results_size_or_more_up_to_twice_their_own(content, style):
    assert [style_reading_side(side, 512, 640) for side, _ in scale_schedule(512, 80, True, aspect=1.5)] == [256, 256, 512]
    assert [style_reading_side(side, 384, 640) for side, _ in scale_schedule(384, 80, True, aspect=1.5)] == [192, 222, 384]
    # a print's scales up to 512 px read it as a 512 px run's do; above, at its own resolution (at least 512 px), no larger
    assert [style_reading_side(side, 4096, 448) for side, _ in scale_schedule(4096, 80, True)] == [256, 256, 512, 512, 512, 512]
    assert [style_reading_side(side, 4096, 3000) for side, _ in scale_schedule(4096, 80, True)] == [256, 256, 512, 1024, 2048, 3000]
    # one scale, no print's look: the painting at the picture's size, as the textbook reads it
    assert style_reading_side(2048, 2048, 448, multiscale=False) == 2048


def test_coarse_scales_keep_a_short_side_of_64_px():
    assert [side for side, _ in scale_schedule(512, 100, True, aspect=1.5)] == [128, 256, 512]
    assert [side for side, _ in scale_schedule(512, 100, True, aspect=4)] == [256, 512]
    assert [side for side, _ in scale_schedule(512, 100, True, aspect=6)] == [384, 512]
    assert scale_schedule(512, 100, True, aspect=8) == [(512, 100)]


@pytest.mark.parametrize("box", [(0, 0, 448, 56), (0, 100, 450, 175), (200, 0, 237, 296), (200, 0, 250, 300)],
                         ids=["8:1", "6:1", "1:8", "1:6"])
def test_defaults_make_pictures_from_8_to_1_to_1_to_8(content, style, box):
    strip = content.crop(box)
    frames = list(stylize(strip, style, replace(Settings(), steps=4, frame_interval=0)))
    final = frames[-1]
    assert final.done and not final.message
    assert max(final.image.size) == 512
    assert final.image.width / final.image.height == pytest.approx(strip.width / strip.height, rel=0.05)


@pytest.mark.parametrize("box", [(0, 0, 448, 56), (200, 0, 237, 296)], ids=["8:1", "1:8"])
def test_a_narrow_style_image_is_enlarged_at_coarse_scales(content, style, box, monkeypatch):
    # at the 128 px scale an 8:1 painting would be 16 px across, too narrow for VGG: it is read at its
    # short side's minimum instead (the sizes the objective reads it at are recorded as it runs)
    read_at = []

    def recorded(width, height, long_side, *rest):
        size = style_size(width, height, long_side, *rest)
        read_at.append((long_side, size))
        return size

    monkeypatch.setattr(images, "style_size", recorded)
    final = list(stylize(content.crop((100, 0, 400, 300)), content.crop(box), replace(FAST, size=256, steps=3)))[-1]
    assert final.done and not final.message and final.image.size == (256, 256)
    coarse = [size for long_side, size in read_at if long_side == 128]
    assert coarse and all(sorted(size) == [images.MIN_SIDE, 8 * images.MIN_SIDE] for size in coarse), read_at


@pytest.mark.parametrize("amx", [False, True], ids=["avx512-bf16", "amx"])
def test_auto_precision_is_fp32_where_onednn_may_not_use_bf16_instructions(monkeypatch, amx):
    # ONEDNN_MAX_CPU_ISA=AVX2 stands in for an AVX2 machine; on a CPU with AVX512-BF16 oneDNN then
    # emulates bf16 (a 256 px step took 11 s instead of 0.1 s). torch's own capability checks say
    # this CPU has the instructions, whatever this machine has.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: not amx)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)  # the variable's older name, read when the new one is unset
    cpu = torch.device("cpu")
    for limit in ("AVX2", "avx512_core", " AVX512_CORE_VNNI "):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        assert resolve_precision("auto", cpu) == "fp32", limit
    for limit in ("AVX512_CORE_BF16", "avx512_core_amx", ""):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        assert resolve_precision("auto", cpu) == "bf16", limit
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"


def test_auto_precision_is_fp32_on_a_cpu_without_bf16_instructions_whatever_onednn_may_use(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for limit in ("AVX2", "AVX512_CORE_BF16", "AVX512_CORE_AMX", ""):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        assert resolve_precision("auto", torch.device("cpu")) == "fp32", limit
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for, it is what it is asked


def test_several_styles_blend_by_their_weights(content, style, second_style):
    settings = replace(FAST, steps=15, frame_interval=3600)

    def result(styles, blend=None):
        return list(stylize(content, styles, replace(settings, style_blend=blend)))[-1].image

    assert result([style, second_style], (1, 0)).tobytes() == result(style).tobytes()
    toward_first, toward_second = result([style, second_style], (3, 1)), result([style, second_style], (1, 3))

    def distance(image, to):
        return distances(image, content, to, settings)["style"]

    assert distance(toward_first, style) < distance(toward_second, style)
    assert distance(toward_second, second_style) < distance(toward_first, second_style)
    with pytest.raises(SettingsError, match="style blend: give 2 values"):
        next(stylize(content, [style, second_style], replace(FAST, style_blend=(1,))))


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "steps must be a whole number from 1 to 10000"),
    ({"size": 100000}, "size must be a whole number from 64 to 8192"),
    ({"style_weight": float("nan")}, "style weight must be a number"),
    ({"content_weight": -1.0}, "content weight must be a number from 0"),
    ({"tv_weight": float("inf")}, "tv weight"),
    ({"style_layers": ()}, "at least one style layer"),
    ({"style_layers": ("relu1_1", "fc7")}, "unknown style layer 'fc7'"),
    ({"content_layer": "relu6_1"}, "unknown content layer"),
    ({"style_layer_weights": (0.0,) * 5}, "must not all be zero"),
    ({"optimizer": "sgd"}, "unknown optimizer"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"device": f"cuda:{torch.cuda.device_count()}"}, "is not available here; this machine has cpu"),
    ({"device": "cpu:1"}, "device 'cpu:1' is not available here"),
    ({"weights": "vgg16"}, "weights must be"),
    ({"style_scale": 0.0}, "style scale"),
    ({"steps": 10**300}, r"10000, not 10{35}\.\.\.$"),  # an absurd value is quoted in part
    ({"size": (512,)}, r"not \[512\]$"),  # a list as it was sent
])
def test_bad_settings_name_what_is_allowed(changes, message):
    with pytest.raises(SettingsError, match=message):
        replace(Settings(), **changes).validated()


def test_images_of_any_mode_and_files_are_taken_as_open_image_takes_them(content, style):
    def picture(content, style):
        return list(stylize(content, style, replace(FAST, steps=1)))[-1].image.tobytes()

    reference = picture(content, style)
    assert picture(content.convert("RGBA"), style) == reference  # opaque: flattened to the same pixels
    assert picture(content, [style.convert("P")]) == picture(content, style.convert("P").convert("RGB"))
    assert picture(EXAMPLES / "chelsea.jpg", str(EXAMPLES / "starry_night.jpg")) == reference
    grey_content, grey_style = content.convert("L"), style.convert("L")
    assert picture(grey_content, grey_style) == picture(grey_content.convert("RGB"), grey_style.convert("RGB"))
    with pytest.raises(images.ImageError, match="content image must be a PIL image, a file path or bytes, not ndarray"):
        next(stylize(numpy.zeros((64, 64, 3), numpy.uint8), style, FAST))
    with pytest.raises(images.ImageError, match="is a folder, not an image file"):
        distances(content, EXAMPLES, style)
    with pytest.raises(images.ImageError, match="^second style image: file not found: missing.jpg"):
        next(stylize(content, [style, "missing.jpg"], FAST))


def test_a_mask_takes_no_style_blend(content, style, second_style):
    mask = Image.new("L", (8, 8), 255)
    with pytest.raises(SettingsError, match="a style blend does not apply with a mask"):
        next(stylize(content, [style, second_style], replace(FAST, style_blend=(3, 1)), mask=mask))
    equal = list(stylize(content, [style, second_style], replace(FAST, steps=1, style_blend=(2, 2)), mask=mask))[-1]
    assert equal.done


def test_tiny_and_extreme_images_are_refused_or_upscaled(style):
    tiny = Image.new("RGB", (8, 8), "red")
    assert list(stylize(tiny, style, replace(FAST, steps=1)))[-1].image.size == (64, 64)
    with pytest.raises(images.ImageError, match="aspect ratio"):
        next(stylize(Image.new("RGB", (4000, 10)), style, FAST))
    with pytest.raises(images.ImageError, match="^second style image is 4000x10 px: aspect ratios beyond 8:1"):
        next(stylize(tiny, [style, Image.new("RGB", (4000, 10))], FAST))


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


def _poison(at_step: int):
    """An on_step that turns the picture into NaN after step `at_step`, as a diverging step would."""
    def on_step(step, image):
        if step == at_step:
            image.fill_(math.nan)
    return on_step


def test_nan_between_frames_is_caught_at_the_next_frame_with_its_step(content, style):
    frames = list(stylize(content, style, replace(FAST, steps=8, multiscale=False, frame_interval=3600), on_step=_poison(3)))
    assert [frame.step for frame in frames] == [1, 8]
    assert frames[-1].done and "at step 4" in frames[-1].message and "from step 1" in frames[-1].message
    assert frames[-1].image.tobytes() == frames[0].image.tobytes()


def test_nan_after_a_scales_last_frame_is_caught_before_the_next_scale(content, style):
    settings = replace(FAST, size=256, steps=8, frame_interval=3600)
    assert scale_schedule(256, 8, True, aspect=1.5) == [(128, 5), (256, 3)]
    frames = list(stylize(content, style, settings, on_step=_poison(5)))
    assert [frame.step for frame in frames] == [1, 5]
    final = frames[-1]
    assert final.done and "NaN at step 5" in final.message and "from step 1" in final.message
    assert final.image.tobytes() == frames[0].image.tobytes()  # the last good picture, not NaN upscaled


def test_quality_style_distance_halves_and_content_stays(content, style):
    settings = Settings(size=128, steps=60, frame_interval=3600)
    result = list(stylize(content, style, settings))[-1].image
    reference = content.resize(result.size, Image.BICUBIC)
    before = distances(reference, content, style, settings)
    after = distances(result, content, style, settings)
    style_only = distances(images.to_pil(images.resize(images.to_tensor(style), (result.height, result.width))), content, style, settings)
    assert after["style"] < 0.5 * before["style"], (before, after)
    assert after["content"] < 0.5 * style_only["content"], (after, style_only)
