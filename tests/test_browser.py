"""The app in a real headless Chromium: load, fill from an example, stylize, watch, stop."""

import io
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from PIL import Image

import app
from nst import Settings, images, save_png

from .conftest import EXAMPLES, engine_is_busy, engine_is_idle

SCREENSHOTS = Path(__file__).resolve().parent / "output"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
STOPS = 10


def _chromium() -> str | None:
    """Chromium wherever it is: the NST_CHROMIUM environment variable (a path or a name on PATH), else
    the first of the usual names on PATH; None where there is none."""
    if NAMED:
        return shutil.which(NAMED)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


NAMED = os.environ.get("NST_CHROMIUM")
CHROMIUM = _chromium()
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")  # CI=true: GitHub Actions, which runs .ci/run
NO_CHROMIUM = (f"NST_CHROMIUM={NAMED} is not an executable" if NAMED else
               f"no Chromium: set NST_CHROMIUM, or put one of {', '.join(CHROMIUM_NAMES)} on PATH")

# Without Chromium the browser tests are skipped, and say why; where they must run (in CI, or with
# NST_CHROMIUM set) they fail.
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None and not IN_CI and not NAMED, reason=NO_CHROMIUM)]


@pytest.fixture(scope="module")
def browser(server_url):
    if CHROMIUM is None:
        pytest.fail(NO_CHROMIUM + ("; CI runs the browser tests" if IN_CI else ""))
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server_url):
    """A fresh tab on the app, nothing filled in."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.goto(server_url)
    yield page
    context.close()


def _step(page) -> int:
    match = re.search(r"step (\d+)/", page.locator("#status").inner_text())
    return int(match.group(1)) if match else 0


def _set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))


def _example(content: str, style: str) -> tuple[int, float, int]:
    """The examples table's row of a pair, with its style strength and size."""
    index, row = next((index, row) for index, row in enumerate(app.example_rows())
                      if Path(row[0]).stem == content and Path(row[1]).stem == style)
    return index, row[2], row[3]


def _fill_from_example(page, content: str = "chelsea", style: str = "graf1", size: int | None = None, steps: int | None = None) -> None:
    """Click an example and wait until its values are in the inputs; then set `size` and `steps`."""
    index, strength, example_size = _example(content, style)
    page.get_by_text("Advanced", exact=True).click()  # where the size and the steps are
    page.locator("#examples tbody tr").nth(index).click()
    # in the input boxes, not the example table's thumbnails
    expect(page.locator(f"#content img[src*={content}]")).to_be_visible(timeout=10_000)
    expect(page.locator(f"#style img[src*={style}]")).to_be_visible(timeout=10_000)
    expect(page.locator("#strength input[type=number]")).to_have_value(f"{strength:g}", timeout=10_000)
    expect(page.locator("#size input[type=number]")).to_have_value(str(example_size), timeout=10_000)
    if size:
        _set_slider(page, "size", size)
    if steps:
        _set_slider(page, "steps", steps)


def _size(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["width"], box["height"]


def _legend_shows(page, names) -> bool:
    """The plot's block holds its title, chart and legend without overflowing (it clips what does, and an
    element screenshot scrolls it), and each name's legend entry lies wholly inside it."""
    if page.locator("#loss-plot").evaluate("block => block.scrollHeight > block.clientHeight"):
        return False
    block = page.locator("#loss-plot").bounding_box()
    for name in names:
        entry = page.locator("#loss-plot .role-legend").get_by_text(name, exact=True).bounding_box()
        if not (block["x"] <= entry["x"] and entry["x"] + entry["width"] <= block["x"] + block["width"]
                and block["y"] <= entry["y"] and entry["y"] + entry["height"] <= block["y"] + block["height"]):
            return False
    return True


def _badges(page) -> int:
    """Gradio's red "Error" labels over components whose event failed."""
    return page.get_by_text("Error", exact=True).count()


def test_page_loads(page):
    expect(page.get_by_role("button", name="Stylize")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(page.get_by_text("Examples (click one, then Stylize)")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "1-loaded.png", full_page=True)


def _on_arrival(browser, server_url, width: int, height: int, screens: int, name: str) -> tuple[dict, dict]:
    """Where Stylize and the result lie on a fresh page in a window of this size (px from the page's top),
    with a screenshot of its first `screens` screens; the brush and the expert controls start closed."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(server_url)
    expect(page.get_by_role("button", name="Stylize")).to_be_visible()
    page.wait_for_function("[...document.images].every(image => image.complete)")  # the thumbnails have their size
    expect(page.locator("#painting")).to_be_hidden()
    expect(page.locator("#steps")).to_be_hidden()
    scrolled = page.evaluate("window.scrollY")
    stylize, result = (page.locator(elem_id).bounding_box() for elem_id in ("#stylize", "#result"))
    shown = min(screens * height, page.evaluate("document.documentElement.scrollHeight"))
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True, clip={"x": 0, "y": 0, "width": width, "height": shown})
    context.close()
    return ({**stylize, "y": stylize["y"] + scrolled}, {**result, "y": result["y"] + scrolled})


def test_stylize_and_the_result_are_in_sight_on_arrival(browser, server_url):
    stylize, result = _on_arrival(browser, server_url, 1400, 900, 1, "first-screen")
    assert stylize["y"] + stylize["height"] <= 900 and result["y"] <= 900, (stylize, result)  # both on a laptop's first screen
    stylize, result = _on_arrival(browser, server_url, 390, 844, 2, "phone")
    assert stylize["y"] <= 2 * 844 and result["y"] >= stylize["y"] + stylize["height"], (stylize, result)  # Stylize, then the result


def test_example_fills_the_inputs(page):
    _, strength, size = _example("chelsea", "graf1")
    assert strength != app.DEFAULT_STRENGTH and size != Settings().size  # so that the page's defaults cannot pass for them
    _fill_from_example(page, "chelsea", "graf1")
    expect(page.locator("#strength input[type=number]")).to_have_value(f"{strength:g}")
    expect(page.locator("#size input[type=number]")).to_have_value(str(size))
    page.screenshot(path=SCREENSHOTS / "2-example.png", full_page=True)


def test_stylize_streams_full_size_pictures_and_a_growing_loss_plot(page):
    _fill_from_example(page, size=256, steps=40)
    page.get_by_role("button", name="Stylize").click()
    expect(page.locator("#status")).to_contain_text("128×85 px", timeout=30_000)
    picture = page.locator("#result img")
    plot = page.locator("#loss-plot canvas, #loss-plot svg").first
    expect(plot).to_be_visible(timeout=10_000)
    assert _legend_shows(page, ["content", "style", "total", "→ 256 px"])  # every series is named from the first frame on
    first_box, first_plot, first_src = _size(page.locator("#result")), plot.screenshot(), picture.get_attribute("src")
    page.screenshot(path=SCREENSHOTS / "3-running.png", full_page=True)
    expect(page.locator("#status")).to_contain_text("256×170 px", timeout=60_000)
    page.wait_for_timeout(1500)  # a few frames of the finer scale
    assert _size(page.locator("#result")) == first_box  # the box keeps its size from the first frame on
    assert picture.get_attribute("src") != first_src and plot.screenshot() != first_plot  # newer picture, more losses
    assert _legend_shows(page, ["content", "style", "total", "→ 256 px"])
    page.screenshot(path=SCREENSHOTS / "4-running-later.png", full_page=True)
    expect(page.locator("#status")).to_contain_text("done", timeout=60_000)
    assert _size(page.locator("#result")) == first_box
    assert _legend_shows(page, ["content", "style", "total", "→ 256 px"])
    expect(page.locator("#timelapse a, #timelapse button").first).to_be_visible(timeout=30_000)
    page.screenshot(path=SCREENSHOTS / "5-done.png", full_page=True)


def test_a_gallery_painting_becomes_the_style(page):
    page.locator("#gallery img[src*=munch_scream]").click()
    expect(page.locator("#style img[src*=munch_scream]")).to_be_visible(timeout=10_000)


def test_a_dropped_result_png_restores_the_settings(page, tmp_path):
    settings = Settings(size=384, steps=77, seed=9, style_layers=("relu1_1", "relu2_1")).validated()
    save_png(Image.new("RGB", (16, 16), "white"), tmp_path / "result.png", settings)
    page.get_by_text("Advanced", exact=True).click()
    page.locator("#restore input[type=file]").set_input_files(str(tmp_path / "result.png"))
    expect(page.locator("#status")).to_contain_text("Settings restored", timeout=10_000)
    expect(page.locator("#steps input[type=number]")).to_have_value("77")
    expect(page.locator("#size input[type=number]")).to_have_value("384")
    page.screenshot(path=SCREENSHOTS / "6-restored.png", full_page=True)


def test_stop_keeps_the_picture_and_says_stopped_without_error_badges(page):
    _fill_from_example(page, size=128, steps=1000)
    for attempt in range(1, STOPS + 1):
        page.get_by_role("button", name="Stylize").click()
        expect(page.locator("#status")).to_contain_text("left", timeout=30_000)
        assert attempt > 1 or engine_is_busy()
        running_box = _size(page.locator("#result"))
        page.get_by_role("button", name="Stop").click()
        expect(page.locator("#status")).to_contain_text("Stopped", timeout=10_000)
        assert attempt > 1 or engine_is_idle()
        assert _size(page.locator("#result")) == running_box and _legend_shows(page, ["content", "style", "total"])
        page.screenshot(path=SCREENSHOTS / f"7-stopped-{attempt}.png", full_page=True)
        assert _badges(page) == 0, f"an Error badge after Stop number {attempt}"
        expect(page.locator("#result img")).to_be_visible()
        assert re.search(r"step \d+/1000", page.locator("#status").inner_text())


def test_closing_the_tab_stops_the_work(page):
    _fill_from_example(page, size=128, steps=1000)
    page.get_by_role("button", name="Stylize").click()
    expect(page.locator("#status")).to_contain_text("left", timeout=30_000)
    assert engine_is_busy()
    page.close()
    assert engine_is_idle(settle=2.5)  # the server notices the closed page, then one step finishes


def test_a_brush_stroke_says_where_the_style_goes(page):
    _, strength, _ = _example("astronaut", "hubble_deep_field")
    assert strength != app.DEFAULT_STRENGTH  # so that waiting for it waits for the example
    _fill_from_example(page, "astronaut", "hubble_deep_field", size=128, steps=30)  # her canvas comes with her photo
    _set_slider(page, "strength", 8)  # strongly, so that the painted band and the rest differ plainly at 128 px
    page.get_by_text("Paint where the style goes (optional)").click()
    canvas = page.locator("#painting canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    for row in range(5):  # strokes over her face and shoulders; the photo sits in the canvas's centre
        y = box["y"] + box["height"] * (0.3 + 0.045 * row)
        page.mouse.move(box["x"] + box["width"] * 0.4, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=4)
        page.mouse.up()
    page.screenshot(path=SCREENSHOTS / "8-painted.png", full_page=True)
    page.get_by_role("button", name="Stylize").click()
    expect(page.locator("#status")).to_contain_text("done", timeout=60_000)
    page.screenshot(path=SCREENSHOTS / "9-painted-result.png", full_page=True)
    result = Image.open(io.BytesIO(httpx.get(page.locator("#result img").get_attribute("src")).content)).convert("RGB")
    photo = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize(result.size, Image.Resampling.BICUBIC)

    def change(top: float, bottom: float) -> float:
        box = (0, round(top * result.height), result.width, round(bottom * result.height))
        return float((images.to_tensor(result.crop(box)) - images.to_tensor(photo.crop(box))).abs().mean())

    assert change(0.8, 1.0) < 0.08 and change(0.35, 0.5) > 2 * change(0.8, 1.0)  # painted: painting; below: still the photo


def test_the_clip_tab_shows_frames_as_they_are_painted_then_plays_the_mp4(page):
    page.get_by_role("tab", name="Clip").click()
    page.locator("#clip-examples tbody tr").first.click()
    expect(page.locator("#clip video")).to_have_attribute("src", re.compile("walkers"), timeout=10_000)
    expect(page.locator("#clip-style img[src*=starry_night]")).to_be_visible(timeout=10_000)
    for elem_id, value in (("clip-size", 64), ("clip-steps", 4), ("clip-fps", 1)):
        _set_slider(page, elem_id, value)
    page.get_by_role("button", name="Paint the clip").click()
    expect(page.locator("#clip-status")).to_contain_text("s left for the clip", timeout=30_000)
    expect(page.locator("#clip-frame img")).to_be_visible()
    expect(page.locator("#clip-status")).to_contain_text("frame 4/4", timeout=60_000)
    player = page.locator("#painted-clip video")
    expect(player).to_be_visible(timeout=30_000)
    # Chromium has read the MP4's header: it can play it (no ffmpeg on the server made it so)
    page.wait_for_function("video => video.readyState >= 1 && video.duration > 0", arg=player.element_handle(), timeout=15_000)
    assert page.locator("#painted-clip video").evaluate("video => video.duration") == pytest.approx(4.0, abs=0.3)
    page.screenshot(path=SCREENSHOTS / "10-clip.png", full_page=True)
