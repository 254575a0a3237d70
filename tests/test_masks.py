"""Paint where the style goes: guided Gram matrices, at 128 px with the real weights."""

from dataclasses import replace

import pytest
import torch
from PIL import Image

from nst import ImageError, Settings, distances, images, stylize
from nst.images import open_mask
from nst.objective import Objective
from nst.runtime import Runtime
from nst.vgg import load_model

from .conftest import guided_style_term, painted_side_changed_more

SETTINGS = Settings(size=128, steps=30, frame_interval=3600)
FLOAT64_BOUND = 1e-12  # float64 sums in another order agree to about 1e-15


@pytest.fixture(scope="module")
def half_mask(content) -> Image.Image:
    mask = Image.new("L", content.size, 0)
    mask.paste(255, (0, 0, content.width // 2, content.height))
    return mask


def _halves(picture: Image.Image) -> tuple[Image.Image, Image.Image]:
    width, height = picture.size
    return picture.crop((0, 0, width // 2, height)), picture.crop((width // 2, 0, width, height))


def _pixel_change(picture: Image.Image, photo: Image.Image, box) -> float:
    return float((images.to_tensor(picture.crop(box)) - images.to_tensor(photo.crop(box))).abs().mean())


def _run(content, style, settings: Settings, mask: Image.Image) -> tuple[list, Image.Image]:
    """The frames of a run and its last optimised picture, before the photo is put back where the mask is black."""
    optimised = {}
    frames = list(stylize(content, style, settings, on_step=lambda step, picture: optimised.update(last=picture.clone()), mask=mask))
    return frames, images.to_pil(optimised["last"])


def _change_everywhere(picture: Image.Image, photo: Image.Image) -> float:
    return _pixel_change(picture, photo.resize(picture.size), (0, 0, *picture.size))


def test_a_half_mask_paints_one_half_and_keeps_the_photo_in_the_other(content, style, half_mask):
    frames, optimised = _run(content, style, replace(SETTINGS, frame_interval=0), open_mask(half_mask))
    # the picture optimised, not the one shown, which keeps the photo on the right whatever the objective does
    assert painted_side_changed_more(optimised, content, factor=2)
    result = frames[-1].image
    photo = content.resize(result.size, Image.Resampling.BICUBIC)
    width, height = result.size
    # a quarter of the picture (twice mask_feather) away from the seam, where the feathered mask is 0 or 1
    far_left, far_right = (0, 0, width // 4, height), (width * 3 // 4, 0, width, height)
    assert _pixel_change(result, photo, far_left) >= 0.08  # of the [0, 1] range
    # every frame shows the photo there; what is left is the photo resized by Pillow here and by torch in the engine
    assert max(_pixel_change(frame.image, photo, far_right) for frame in frames) <= 0.01
    painted, photo_left = _halves(result)[0], _halves(photo)[0]
    before = distances(photo_left, photo_left, style, SETTINGS)["style"]
    after = distances(painted, photo_left, style, SETTINGS)["style"]
    assert after < 0.5 * before, (before, after)


def test_the_unpainted_half_shows_the_sharp_photo_while_a_coarse_scale_runs(content, style, half_mask):
    frames = list(stylize(content, style, replace(SETTINGS, size=256, steps=3, frame_interval=0), mask=open_mask(half_mask)))
    assert frames[0].size[1] < 256 == frames[0].image.width  # a coarse scale, shown at the result's size
    photo = images.to_pil(images.load_tensor(content, 256, "cpu"))  # as the engine reads it
    far_right = (256 * 3 // 4, 0, 256, photo.height)
    # not the photo put back at the coarse size and enlarged with the picture: that is blurred
    assert all(_pixel_change(frame.image, photo, far_right) <= 0.001 for frame in frames)


def test_two_styles_split_left_and_right_each_take_their_own(content, style, second_style, half_mask):
    result = list(stylize(content, [style, second_style], SETTINGS, mask=open_mask(half_mask)))[-1].image
    left, right = _halves(result)
    photo_left, photo_right = _halves(content.resize(result.size, Image.Resampling.BICUBIC))
    assert distances(left, photo_left, style, SETTINGS)["style"] < distances(left, photo_left, second_style, SETTINGS)["style"]
    assert distances(right, photo_right, second_style, SETTINGS)["style"] < distances(right, photo_right, style, SETTINGS)["style"]


def test_a_mask_of_another_size_is_resized_and_a_brush_layer_gives_its_alpha(content, style):
    layer = Image.new("RGBA", (37, 23), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (0, 0, 18, 23))  # painted on the left
    mask = open_mask(layer)
    assert mask.getpixel((2, 2)) == 255 and mask.getpixel((30, 2)) == 0
    frames, optimised = _run(content, style, replace(SETTINGS, steps=3), mask)
    final = frames[-1]
    assert final.done and not final.message and final.image.size == (128, 85)
    assert painted_side_changed_more(optimised, content)



def test_an_unreadable_mask_is_refused():
    with pytest.raises(ImageError, match="mask is not a readable image"):
        open_mask(b"not an image")


@pytest.mark.parametrize("black", [Image.new("L", (40, 30), 0), Image.new("RGBA", (40, 30), (255, 255, 255, 0))],
                         ids=["black", "transparent"])
def test_a_mask_black_everywhere_is_refused_with_one_style_and_gives_the_second_with_two(content, style, second_style, black):
    quick = replace(SETTINGS, size=64, steps=2)
    with pytest.raises(ImageError, match="the mask is black everywhere, which keeps the photo"):
        next(stylize(content, style, quick, mask=open_mask(black)))
    second_everywhere = list(stylize(content, [style, second_style], quick, mask=open_mask(black)))[-1].image
    assert second_everywhere.tobytes() == list(stylize(content, second_style, quick))[-1].image.tobytes()


def test_a_grey_mask_paints_lightly_everywhere(content, style):
    quick = replace(SETTINGS, size=64, steps=4)
    runs = {name: _run(content, style, quick, Image.new("L", (40, 30), grey)) for name, grey in (("full", 255), ("light", 127))}
    shown = {name: _change_everywhere(frames[-1].image, content) for name, (frames, _) in runs.items()}
    assert 0 < shown["light"] < shown["full"]
    # The picture shown is half the photo by compositing alone; the one optimised moves less too: a mask
    # of 1/2 everywhere leaves the region's Gram matrix per position as it was and halves its share.
    optimised = {name: _change_everywhere(picture, content) for name, (_, picture) in runs.items()}
    assert optimised["light"] < 0.9 * optimised["full"], optimised


def test_a_mask_white_everywhere_gives_the_unmasked_objective(content, style):
    settings = SETTINGS.validated()
    photo, painting = images.load_tensor(content, 96, "cpu"), images.load_tensor(style, 96, "cpu")
    everywhere = torch.ones_like(photo[:, :1])
    start = photo.flip(-1).contiguous()  # not the photo, so that both terms have gradients
    results = []
    for mask in (None, everywhere):
        objective = Objective(load_model(), photo, [painting], settings, Runtime.for_settings(replace(settings, winograd="off")), mask)
        picture = start.clone().requires_grad_(True)
        terms = objective(picture)
        terms["total"].backward()
        results.append((terms, picture.grad))
    (plain, plain_grad), (masked, masked_grad) = results
    for term in ("content", "style", "total"):
        assert masked[term].item() == pytest.approx(plain[term].item(), rel=1e-5), term
    torch.testing.assert_close(masked_grad, plain_grad, rtol=1e-4, atol=1e-4 * plain_grad.abs().max().item())


@pytest.mark.parametrize("style_count", [1, 2], ids=["one style", "two styles"])
def test_the_style_term_and_its_gradient_are_the_papers_guided_gram_matrices(model64, content, style, second_style, style_count):
    settings = replace(SETTINGS, tile="off").validated(style_count)
    photo = images.load_tensor(content, 96, "cpu")[..., :64, :96].double()  # sides a multiple of relu5_1's stride
    styles = [images.load_tensor(image, 96, "cpu").double() for image in (style, second_style)[:style_count]]
    # grey almost everywhere and darker on the left, so that m and its root differ and each region's share is neither 1 nor 1/2
    mask = torch.linspace(0, 1, photo.shape[-1], dtype=torch.float64).pow(2).expand(1, 1, *photo.shape[-2:]).contiguous()
    noise = torch.randn(photo.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start = (photo + 0.1 * noise).clamp(0, 1)
    objective = Objective(model64, photo, styles, settings, Runtime(torch.device("cpu"), "fp32", False, False), mask)
    terms = {}
    for name, evaluate in (("objective", lambda picture: objective(picture)["style"]),
                           ("paper", lambda picture: guided_style_term(model64, photo, styles, mask, settings, picture))):
        picture = start.clone().requires_grad_(True)
        value = evaluate(picture)
        value.backward()
        terms[name] = float(value.detach()), picture.grad
    (value, gradient), (expected, expected_gradient) = terms["objective"], terms["paper"]
    assert abs(value - expected) <= FLOAT64_BOUND * expected, (value, expected)
    assert float((gradient - expected_gradient).abs().max()) <= FLOAT64_BOUND * float(expected_gradient.abs().max())
