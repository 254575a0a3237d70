import functools
import itertools
import statistics
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nst import Settings, images, open_image
from nst.lbfgs import LBFGS
from nst.optimizers import BoundedAdam
from nst.vgg import VGG19Features
from nst.weights import load_weights

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def content() -> Image.Image:
    return open_image(EXAMPLES / "chelsea.jpg")


@pytest.fixture(scope="session")
def style() -> Image.Image:
    return open_image(EXAMPLES / "starry_night.jpg")


@pytest.fixture(scope="session")
def model64() -> VGG19Features:
    """The real network in float64, for references that float rounding cannot blur on any CPU."""
    return VGG19Features(load_weights("embedded")).double().to(memory_format=torch.channels_last)


@pytest.fixture(scope="session")
def second_style() -> Image.Image:
    return open_image(EXAMPLES / "graf1.jpg")


class StepCounter:
    """The optimisation steps taken in this process, counted as each optimiser's `step` returns.

    Instrumentation, not a mock: the real step runs, on every device (a CUDA graph's replay too).
    The in-process server's engine runs in this process, so its steps are counted here; CPU time
    said the same only on a quiet machine."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self._ends: list[float] = []  # when the last few steps returned
        self.durations: list[float] = []  # every step's own seconds, in order

    def counting(self, step):
        @functools.wraps(step)
        def counted(optimizer, *args, **kwargs):
            start = time.monotonic()
            result = step(optimizer, *args, **kwargs)
            with self._lock:
                self.count += 1
                self._ends = [*self._ends[-5:], time.monotonic()]
                self.durations.append(self._ends[-1] - start)
            return result
        return counted

    def seconds_per_step(self) -> float:
        """The median time between the last few steps (frames included), or 0.5 before any."""
        with self._lock:
            gaps = [later - earlier for earlier, later in itertools.pairwise(self._ends)]
        return statistics.median(gaps) if gaps else 0.5


STEPS = StepCounter()


@pytest.fixture(scope="session")
def engine_steps_counted():
    with pytest.MonkeyPatch.context() as patch:
        for optimizer in (LBFGS, BoundedAdam):
            patch.setattr(optimizer, "step", STEPS.counting(optimizer.step))
        yield STEPS


@pytest.fixture(scope="session")
def server_url(engine_steps_counted):
    """The app served on a free loopback port for the whole session, its engine's steps counted."""
    import app

    app.prepare_server()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield app.demo.local_url.rstrip("/")
    finally:
        app.demo.close()


def engine_is_busy(within: float = 20.0) -> bool:
    """True as soon as the in-process server's engine has taken two steps, within `within` seconds
    (a step at the tests' 128 px takes 0.1-1 s, by the machine and its load)."""
    before, deadline = STEPS.count, time.monotonic() + within
    while time.monotonic() < deadline:
        if STEPS.count >= before + 2:
            return True
        time.sleep(0.02)
    return False


def engine_is_idle(settle: float = 3.0, frame_interval: float = Settings().frame_interval) -> bool:
    """True once the engine has stopped: its last step returned within `settle` seconds and a step's
    time from now, and no step followed for three frame intervals or four steps' time, whichever
    is longer. False as soon as a step returns after that. `settle` leaves a loaded machine (a core
    busy elsewhere) the time Gradio takes to close a cancelled generator: 1.5 s failed there once."""
    pace = STEPS.seconds_per_step()
    now = time.monotonic()
    last_allowed, quiet_needed = now + settle + pace, max(3 * frame_interval, 4 * pace)
    seen, quiet_since = STEPS.count, now
    while True:
        time.sleep(0.02)
        now = time.monotonic()
        if STEPS.count != seen:
            seen, quiet_since = STEPS.count, now
            if now > last_allowed:
                return False
        elif now - quiet_since >= quiet_needed:
            return True


def painted_side_changed_more(result: Image.Image, photo: Image.Image, factor: float = 1.5) -> bool:
    """Whether, with the left half painted, the picture's left quarter moved `factor` times further
    from the photo than its right quarter. Judge the optimised picture: with one style, a picture
    shown keeps the photo where the mask is black, whatever the objective did there."""
    photo = photo.resize(result.size, Image.Resampling.BICUBIC)
    width, height = result.size
    painted, unpainted = (float((images.to_tensor(result.crop(box)) - images.to_tensor(photo.crop(box))).abs().mean())
                          for box in ((0, 0, width // 4, height), (width * 3 // 4, 0, width, height)))
    print(f"painted side {painted:.4f}, unpainted {unpainted:.4f}")
    return painted > factor * unpainted


def guided_style_term(model, photo: torch.Tensor, styles: list[torch.Tensor], mask: torch.Tensor, settings: Settings,
                      picture: torch.Tensor) -> torch.Tensor:
    """The weighted style term of Gatys et al. 2017's guided Gram matrices, written out from the paper
    and nst/objective.py's docstring, independently of its code; differentiable in `picture`.

    At each style layer the mask is averaged down to the layer's grid; the region's Gram matrix
    sum_p m_p F_p F_p^T / sum_p m_p is matched to its style's Gram matrix per position, and the
    region's term counts by its share of the picture, the mean of m. The first style goes where the
    mask is white; a second style, if any, where 1 - mask is. Each layer's term is weighed by
    beta = style_weight * w_l * rho / E(A_l), rho = (E(A_c) / E(C_c))^(1/4), E(X) = sum X^2 / (4 N^2).
    `settings` must be validated; the picture's sides must be multiples of the deepest layer's stride.
    """
    layers = [*settings.style_layers, settings.content_layer]

    def matrix(features: torch.Tensor) -> torch.Tensor:  # (N, M): filters by positions
        return features[0].reshape(features.shape[1], -1)

    def gram_per_position(features: torch.Tensor) -> torch.Tensor:
        flat = matrix(features)
        return flat @ flat.T / flat.shape[1]

    def energy(gram: torch.Tensor) -> torch.Tensor:
        return gram.pow(2).sum() / (4 * gram.shape[0] ** 2)

    def on_grid(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:  # the mean over each position's pixels
        stride = weights.shape[-1] // features.shape[-1]
        assert weights.shape[-2:] == (features.shape[-2] * stride, features.shape[-1] * stride)
        return F.avg_pool2d(weights, stride).flatten()

    photo_texture = energy(gram_per_position(model(photo, [settings.content_layer])[settings.content_layer]))
    reading_side = round(max(photo.shape[-2:]) * settings.style_scale)
    generated = model(picture, layers)
    term = picture.new_zeros(())
    for style, region in zip(styles, [mask, 1 - mask][: len(styles)], strict=True):
        style = images.resize(style, images.style_size(style.shape[-1], style.shape[-2], reading_side))
        targets = {layer: gram_per_position(features) for layer, features in model(style, layers).items()}
        rho = (energy(targets[settings.content_layer]) / photo_texture) ** 0.25
        for layer, weight in zip(settings.style_layers, settings.style_layer_weights, strict=True):
            m = on_grid(region, generated[layer])
            features = matrix(generated[layer])
            region_gram = (features * m) @ features.T / m.sum()
            beta = settings.style_weight * weight * rho / energy(targets[layer])
            term = term + beta * m.mean() * energy(region_gram - targets[layer])
    return term
