"""The defaults keep the photo and take the painting, measured beside the textbook anchor (nst.quality).

A later speed change cannot quietly trade the photo away: at 128 px, on two panel pairs whose
paintings hold objects of their own, our default picture must stay at least as close to the photo
as jcjohnson/neural-style's recipe (300 L-BFGS steps) while getting about as close to the painting.
"""

import pytest

from nst import Settings, images, quality
from nst.quality import picture_path

SIZE = 128


@pytest.mark.parametrize("content, style", [("hopper", "klimt_kiss"), ("stream", "stone_wall")])
def test_the_defaults_keep_the_photo_and_take_the_painting_beside_the_anchor(content, style):
    photo, painting = images.open_image(picture_path(content)), images.open_image(picture_path(style))
    anchor = quality.judge(quality.anchor(photo, painting, SIZE), photo, painting)
    ours = quality.judge(quality.ours(photo, painting, Settings(size=SIZE)), photo, painting)
    untouched = quality.judge(images.to_pil(images.load_tensor(photo, SIZE, "cpu")), photo, painting)
    print(content, style, "anchor", anchor, "ours", ours, "photo itself", untouched)
    assert ours["content"] <= anchor["content"]
    assert ours["style"] <= 1.1 * anchor["style"]
    assert ours["style"] < 0.5 * untouched["style"]  # and it is the painting's
