import functools
import itertools
import statistics
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from nst import Settings, images, open_image
from nst.lbfgs import LBFGS
from nst.optimizers import BoundedAdam

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def content() -> Image.Image:
    return open_image(EXAMPLES / "chelsea.jpg")


@pytest.fixture(scope="session")
def style() -> Image.Image:
    return open_image(EXAMPLES / "starry_night.jpg")


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

    def counting(self, step):
        @functools.wraps(step)
        def counted(optimizer, *args, **kwargs):
            result = step(optimizer, *args, **kwargs)
            with self._lock:
                self.count += 1
                self._ends = [*self._ends[-5:], time.monotonic()]
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
    from the photo than its right quarter (about 2 after a few steps; 0.9 with the mask left out)."""
    photo = photo.resize(result.size, Image.Resampling.BICUBIC)
    width, height = result.size
    painted, unpainted = (float((images.to_tensor(result.crop(box)) - images.to_tensor(photo.crop(box))).abs().mean())
                          for box in ((0, 0, width // 4, height), (width * 3 // 4, 0, width, height)))
    print(f"painted side {painted:.4f}, unpainted {unpainted:.4f}")
    return painted > factor * unpainted
