"""Optical flow between consecutive frames of a clip, how far it can be trusted, and warping along it.

The flow is OpenCV's DIS (Kroeger et al. 2016): no learnt weights, a few milliseconds a pair on a CPU
at the sizes painted here; the MEDIUM preset (docs/method.md says why not FAST). Reliability is
Ruder et al. 2016's: a pixel counts where the backward flow and the forward flow taken at its end
cancel, and not on a motion boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

# A frame whose reliable pixels are fewer than this share of the picture starts afresh: a scene cut.
CUT_BELOW = 0.5


@dataclass(frozen=True)
class Motion:
    """From a frame to the one before it: `backward` (H, W, 2), where each pixel of this frame was in
    the previous one (offsets in px, x then y), and `reliability` (H, W) in {0, 1}."""

    backward: np.ndarray
    reliability: np.ndarray

    @property
    def reliable_share(self) -> float:
        return float(self.reliability.mean())

    @property
    def is_cut(self) -> bool:
        return self.reliable_share < CUT_BELOW


def _grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.uint8)


def dense_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The flow from grey `source` to grey `target` (H, W, 2), float32: source(p) ~ target(p + flow(p))."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(source, target, None)


def motion(previous: Image.Image, current: Image.Image) -> Motion:
    """The motion from `current` back to `previous` (same size), with its reliability."""
    before, now = _grey(previous), _grey(current)
    backward = dense_flow(now, before)
    forward = dense_flow(before, now)
    return Motion(backward, reliability(backward, forward))


def _sample(array: np.ndarray, flow: np.ndarray, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """`array` read at p + flow(p) for each pixel p, bilinear."""
    height, width = flow.shape[:2]
    columns, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(array, columns + flow[..., 0], rows + flow[..., 1], cv2.INTER_LINEAR, borderMode=border)


def reliability(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """1 where the backward flow can be trusted, else 0 (Ruder et al. 2016): disocclusions, where
    |w + w'|^2 > 0.01 (|w|^2 + |w'|^2) + 0.5 with w' the forward flow at w's end; motion boundaries,
    where |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002; and pixels whose flow leaves the frame."""
    height, width = backward.shape[:2]
    returned = _sample(forward, backward)
    squared = (backward ** 2).sum(-1)
    occluded = ((backward + returned) ** 2).sum(-1) > 0.01 * (squared + (returned ** 2).sum(-1)) + 0.5
    gradients = sum(np.gradient(backward[..., channel], axis=axis) ** 2 for channel in (0, 1) for axis in (0, 1))
    boundary = gradients > 0.01 * squared + 0.002
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    x, y = columns + backward[..., 0], rows + backward[..., 1]
    outside = (x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)
    return (~(occluded | boundary | outside)).astype(np.float32)


def warp(picture: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """The previous frame's `picture` (H, W, C) float32 moved to the current frame along `backward`."""
    return _sample(picture, backward)
