"""The app in a real headless Chromium: load, fill from an example, stylize, watch, stop."""

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from nst import engine

SCREENSHOTS = Path(__file__).resolve().parent / "output"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(server_url):
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        page.goto(server_url)
        yield page
        browser.close()


def _step(page) -> int:
    match = re.search(r"step (\d+)/", page.locator("#status").inner_text())
    return int(match.group(1)) if match else 0


def _set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_page_loads(page):
    expect(page.get_by_role("button", name="Stylize")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(page.get_by_text("Examples (click one, then Stylize)")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "1-loaded.png", full_page=True)


def test_example_fills_the_inputs(page):
    page.locator("tbody tr").first.click()
    expect(page.locator("img[src*=chelsea]").first).to_be_visible(timeout=10_000)
    expect(page.locator("#steps input[type=number]")).to_have_value(str(engine.Settings().steps))
    expect(page.locator("#size input[type=number]")).to_have_value("512")
    assert page.locator("img[src*='chelsea']").count() >= 1
    assert page.locator("img[src*='starry_night']").count() >= 1
    page.screenshot(path=SCREENSHOTS / "2-example.png", full_page=True)


def test_stylize_streams_pictures_and_a_growing_loss_plot_then_stop_stops(page):
    _set_slider(page, "size", 128)
    _set_slider(page, "steps", 1000)
    page.get_by_role("button", name="Stylize").click()
    expect(page.locator("#result img")).to_be_visible(timeout=30_000)
    expect(page.locator("#status")).to_contain_text("step", timeout=30_000)
    first_step = _step(page)
    expect(page.locator("#loss-plot canvas, #loss-plot svg").first).to_be_visible(timeout=10_000)
    page.screenshot(path=SCREENSHOTS / "3-running.png", full_page=True)
    page.wait_for_function(f"() => /step (\\d+)\\//.exec(document.querySelector('#status').innerText)?.[1] > {first_step + 5}",
                           timeout=30_000)
    page.screenshot(path=SCREENSHOTS / "4-running-later.png", full_page=True)

    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#status")).to_contain_text("Stopped", timeout=10_000)
    time.sleep(1.5)  # one frame interval plus one step
    stopped_at = engine.steps_taken
    time.sleep(2.0)
    assert engine.steps_taken == stopped_at
    page.screenshot(path=SCREENSHOTS / "5-stopped.png", full_page=True)


def test_closing_the_tab_stops_the_work(page):
    tab = page.context.new_page()
    tab.goto(page.url)
    tab.locator("tbody tr").first.click()
    expect(tab.locator("img[src*=chelsea]").first).to_be_visible(timeout=10_000)
    _set_slider(tab, "size", 128)
    _set_slider(tab, "steps", 1000)
    tab.get_by_role("button", name="Stylize").click()
    expect(tab.locator("#status")).to_contain_text("step", timeout=30_000)
    tab.close()
    time.sleep(2.5)  # the server notices the closed page, then one step finishes
    stopped_at = engine.steps_taken
    time.sleep(2.0)
    assert engine.steps_taken == stopped_at
