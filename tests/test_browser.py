"""The app in a real headless Chromium: load, fill from an example, stylize, watch, stop."""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from nst import Settings

from .conftest import engine_is_busy, engine_is_idle

SCREENSHOTS = Path(__file__).resolve().parent / "output"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
STOPS = 10

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(server_url):
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


def _fill_from_first_example(page, size: int | None = None, steps: int | None = None) -> None:
    page.locator("tbody tr").first.click()
    expect(page.locator("img[src*=chelsea]").first).to_be_visible(timeout=10_000)
    expect(page.locator("img[src*=starry_night]").first).to_be_visible(timeout=10_000)
    if size:
        _set_slider(page, "size", size)
    if steps:
        _set_slider(page, "steps", steps)


def _badges(page) -> int:
    """Gradio's red "Error" labels over components whose event failed."""
    return page.get_by_text("Error", exact=True).count()


def test_page_loads(page):
    expect(page.get_by_role("button", name="Stylize")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(page.get_by_text("Examples (click one, then Stylize)")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "1-loaded.png", full_page=True)


def test_example_fills_the_inputs(page):
    _fill_from_first_example(page)
    expect(page.locator("#steps input[type=number]")).to_have_value(str(Settings().steps))
    expect(page.locator("#size input[type=number]")).to_have_value("512")
    page.screenshot(path=SCREENSHOTS / "2-example.png", full_page=True)


def test_stylize_streams_pictures_and_a_growing_loss_plot(page):
    _fill_from_first_example(page, size=128, steps=1000)
    page.get_by_role("button", name="Stylize").click()
    expect(page.locator("#result img")).to_be_visible(timeout=30_000)
    expect(page.locator("#status")).to_contain_text("left", timeout=30_000)
    plot = page.locator("#loss-plot canvas, #loss-plot svg").first
    expect(plot).to_be_visible(timeout=10_000)
    first_step, first_plot, first_picture = _step(page), plot.screenshot(), page.locator("#result img").get_attribute("src")
    page.screenshot(path=SCREENSHOTS / "3-running.png", full_page=True)
    page.wait_for_function(f"() => /step (\\d+)\\//.exec(document.querySelector('#status').innerText)?.[1] > {first_step + 5}",
                           timeout=30_000)
    assert plot.screenshot() != first_plot  # redrawn with the new steps' losses
    assert page.locator("#result img").get_attribute("src") != first_picture  # a newer picture
    page.screenshot(path=SCREENSHOTS / "4-running-later.png", full_page=True)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#status")).to_contain_text("Stopped", timeout=10_000)


def test_stop_keeps_the_picture_and_says_stopped_without_error_badges(page):
    _fill_from_first_example(page, size=128, steps=1000)
    for attempt in range(1, STOPS + 1):
        page.get_by_role("button", name="Stylize").click()
        expect(page.locator("#status")).to_contain_text("left", timeout=30_000)
        assert attempt > 1 or engine_is_busy()
        page.get_by_role("button", name="Stop").click()
        expect(page.locator("#status")).to_contain_text("Stopped", timeout=10_000)
        assert attempt > 1 or engine_is_idle()
        page.screenshot(path=SCREENSHOTS / f"5-stopped-{attempt}.png", full_page=True)
        assert _badges(page) == 0, f"an Error badge after Stop number {attempt}"
        expect(page.locator("#result img")).to_be_visible()
        assert re.search(r"step \d+/1000", page.locator("#status").inner_text())


def test_closing_the_tab_stops_the_work(page):
    _fill_from_first_example(page, size=128, steps=1000)
    page.get_by_role("button", name="Stylize").click()
    expect(page.locator("#status")).to_contain_text("left", timeout=30_000)
    assert engine_is_busy()
    page.close()
    assert engine_is_idle(settle=2.5)  # the server notices the closed page, then one step finishes
