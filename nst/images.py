"""Images in and out: decoding, validation, resizing, PIL <-> tensor, colour handling."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from torch import Tensor

# open_image refuses larger images from their header, before decoding them (Pillow's own limit, which
# this module leaves as it is, only warns below 179 megapixels).
MAX_INPUT_PIXELS = 50_000_000
# VGG halves the size four times before relu5_1; below this a feature map collapses.
MIN_SIDE = 32
MAX_ASPECT = 8.0


class ImageError(ValueError):
    """An image that cannot be used; the message is one line meant for a person."""


ImageSource = Image.Image | str | os.PathLike | bytes


def open_image(source: ImageSource, what: str = "image") -> Image.Image:
    """Decode `source` into an upright RGB image.

    EXIF orientation is applied, animations give their first frame, transparency is flattened on
    white, and greyscale, palette, CMYK and 16-bit images become 8-bit RGB.
    """
    return _to_rgb(_decode(source, what), what)


def open_styles(styles: ImageSource | Iterable[ImageSource]) -> list[Image.Image]:
    """One style image or several, each as `open_image` gives it."""
    single = isinstance(styles, ImageSource) or not isinstance(styles, Iterable)
    styles = [styles] if single else list(styles)
    return [open_image(style, what) for style, what in zip(styles, style_names(len(styles)), strict=True)]


def style_names(count: int) -> list[str]:
    """How messages name each of `count` style images: as the app does for two, by number for more."""
    if count <= 2:
        return ["style image", "second style image"][:count]
    return [f"style image {number}" for number in range(1, count + 1)]


def open_mask(source: ImageSource, what: str = "mask") -> Image.Image:
    """Decode `source` into a greyscale mask: white takes the (first) style, black keeps the photo
    (or takes the second style), grey blends. An image with transparency gives its alpha channel
    (a brush layer: painted = white), any other its brightness."""
    image = _decode(source, what)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            return alpha
    return _to_rgb(image, what).convert("L")


def _decode(source: ImageSource, what: str) -> Image.Image:
    """The first frame of `source`, upright, in its own mode; ImageError for anything unusable."""
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, bytes):
            image = Image.open(io.BytesIO(source))
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                raise ImageError(f"{what}: {path} is a folder, not an image file")
            if not path.is_file():
                raise ImageError(f"{what}: file not found: {path}")
            image = Image.open(path)
        else:
            raise ImageError(f"{what} must be a PIL image, a file path or bytes, not {type(source).__name__}")
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise ImageError(f"{what} is too large: {image.width}x{image.height} px, "
                             f"the limit is {MAX_INPUT_PIXELS // 1_000_000} megapixels")
        image.seek(0)
        image.load()
        return ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"{what} is too large: the limit is {MAX_INPUT_PIXELS // 1_000_000} megapixels") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"{what} is not a readable image (PNG, JPEG, WebP, GIF, BMP or TIFF)") from error


def _to_rgb(image: Image.Image, what: str) -> Image.Image:
    try:
        return _convert_to_rgb(image)
    except (OSError, ValueError) as error:
        raise ImageError(f"{what} has pixels of a kind this program cannot read ({image.mode})") from error


def _convert_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16/32-bit greyscale: scale to 8 bits by the actual range of the format. Pillow maps pixels
        # only in mode I, which every 16-bit byte order converts to.
        peak = 65535.0 if image.mode != "I" or image.getextrema()[1] > 255 else 255.0
        image = image.convert("I").point(lambda value: value * (255.0 / peak)).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGB" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def working_size(width: int, height: int, long_side: int, what: str = "image") -> tuple[int, int]:
    """(height, width) with the long side at `long_side`, checked to be large enough for VGG."""
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageError(f"{what} is {width}x{height} px: aspect ratios beyond {MAX_ASPECT:g}:1 are not supported")
    scale = long_side / max(width, height)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    if min(new_width, new_height) < MIN_SIDE:
        raise ImageError(f"{what} would be {new_width}x{new_height} px at this size; the short side must be at least {MIN_SIDE} px")
    return new_height, new_width


def style_size(width: int, height: int, long_side: int, what: str = "style image") -> tuple[int, int]:
    """(height, width) of a style image for a picture of this long side: like `working_size`, but a
    narrow style image is enlarged until its short side is MIN_SIDE rather than refused. Its Gram
    matrices are statistics over positions, so its size need not match the picture's."""
    aspect = max(width, height) / min(width, height)
    return working_size(width, height, max(long_side, math.ceil(MIN_SIDE * aspect)), what)


def to_tensor(image: Image.Image, device: torch.device | str = "cpu") -> Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in [0, 1]."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    tensor = data.view(image.height, image.width, 3).permute(2, 0, 1).unsqueeze(0)
    return tensor.to(device=device, dtype=torch.float32) / 255.0


def to_pil(tensor: Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL RGB."""
    pixels = (tensor.detach()[0].float().clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.permute(1, 2, 0).contiguous().cpu()
    return Image.frombytes("RGB", (pixels.shape[1], pixels.shape[0]), pixels.numpy().tobytes())


def resize(tensor: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic, antialiased when shrinking, clamped back to [0, 1]."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def lanczos_shrink(tensor: Tensor, size: tuple[int, int]) -> Tensor:
    """Shrunk to `size` (height, width) by Lanczos-3, as PIL's `Image.resize(..., LANCZOS)` shrinks, and
    differentiable: two resampling matrices, one per axis."""
    rows = _lanczos_matrix(tensor.shape[-2], size[0], tensor)
    columns = _lanczos_matrix(tensor.shape[-1], size[1], tensor)
    return rows @ (tensor @ columns.T)


def _lanczos_matrix(source: int, target: int, like: Tensor) -> Tensor:
    """(target, source): each output pixel's weights over the input pixels, the kernel stretched by the shrink."""
    stretch = max(source / target, 1.0)
    centres = (torch.arange(target, dtype=torch.float64) + 0.5) * (source / target)
    offsets = ((torch.arange(source, dtype=torch.float64) + 0.5)[None, :] - centres[:, None]) / stretch
    weights = torch.sinc(offsets) * torch.sinc(offsets / 3) * (offsets.abs() < 3)
    return (weights / weights.sum(dim=1, keepdim=True)).to(dtype=like.dtype, device=like.device)


def load_tensor(image: Image.Image, long_side: int, device: torch.device | str, what: str = "image") -> Tensor:
    height, width = working_size(image.width, image.height, long_side, what)
    return resize(to_tensor(image, device), (height, width))


def load_style_tensor(image: Image.Image, long_side: int, device: torch.device | str, what: str = "style image") -> Tensor:
    height, width = style_size(image.width, image.height, long_side, what)
    return resize(to_tensor(image, device), (height, width))


def load_mask(mask: Image.Image, size: tuple[int, int], feather: float, device: torch.device | str) -> Tensor:
    """A mask from `open_mask` as a (1, 1, height, width) tensor in [0, 1] at `size`, its edges
    softened over about `feather` px (a Gaussian of that width over four)."""
    resized = mask.convert("L").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    if feather > 0:
        resized = resized.filter(ImageFilter.GaussianBlur(feather / 4))
    data = torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8).view(1, 1, size[0], size[1])
    return data.to(device=device, dtype=torch.float32) / 255.0


def composite(picture: Tensor, photo: Tensor, mask: Tensor) -> Tensor:
    """`picture` where `mask` is 1, `photo` where it is 0, blended in between (all at one size).
    Where the mask is 1 the result is `picture` exactly."""
    return mask * picture + (1 - mask) * photo


def greyscale(image: Image.Image) -> Image.Image:
    """The brightness (Y of YCbCr, ITU-R BT.601) of an RGB image in all three channels, for VGG to read."""
    return image.convert("L").convert("RGB")


def with_chroma(picture: Image.Image, colour_source: Image.Image) -> Image.Image:
    """The brightness of `picture` with the colours (Cb and Cr) of `colour_source`, resized to fit."""
    _, blue, red = colour_source.resize(picture.size, Image.Resampling.BICUBIC).convert("YCbCr").split()
    return Image.merge("YCbCr", (picture.convert("L"), blue, red)).convert("RGB")


def match_luminance(style: Tensor, content: Tensor) -> Tensor:
    """Shift and scale the style's luminance to the content's mean and deviation (Gatys 2016)."""
    std_style, mean_style = torch.std_mean(style)
    std_content, mean_content = torch.std_mean(content)
    return ((style - mean_style) * (std_content / (std_style + 1e-6)) + mean_content).clamp(0, 1)


def match_histogram(style: Tensor, content: Tensor, eps: float = 1e-5) -> Tensor:
    """Linear colour transfer: the style's pixels take the content's colour mean and covariance.

    x' = C_c^(1/2) C_s^(-1/2) (x - mu_s) + mu_c, the "Image Analogies" variant in Gatys et al. 2016.
    """

    def stats(image: Tensor) -> tuple[Tensor, Tensor]:
        pixels = image[0].reshape(3, -1).double()
        mean = pixels.mean(dim=1, keepdim=True)
        centred = pixels - mean
        return mean, centred @ centred.T / pixels.shape[1] + eps * torch.eye(3, dtype=pixels.dtype, device=pixels.device)

    def matrix_power(matrix: Tensor, power: float) -> Tensor:
        values, vectors = torch.linalg.eigh(matrix)
        return vectors @ torch.diag(values.clamp_min(eps) ** power) @ vectors.T

    mean_style, cov_style = stats(style)
    mean_content, cov_content = stats(content)
    transform = matrix_power(cov_content, 0.5) @ matrix_power(cov_style, -0.5)
    pixels = style[0].reshape(3, -1).double()
    matched = transform @ (pixels - mean_style) + mean_content
    return matched.reshape(style.shape).to(style.dtype).clamp(0, 1)
