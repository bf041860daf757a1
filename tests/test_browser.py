"""The app in headless Chromium (playwright): generate, upload + paint + complete, inspect + click a pixel.

Screenshots go to tests/screenshots/ (gitignored). Skipped when /usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import running_app, save_tiny_checkpoints

from pixelrnn import ui

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
TIMEOUT_MS = 60_000

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_app(save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"), rgb=False)) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server, wait_until="load")
        page.wait_for_selector("#gen-run")
        yield page
        browser.close()


def set_slider(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_generate(page):
    set_slider(page, "gen-pace", 0.5)
    page.click("#gen-run")
    page.wait_for_function("document.querySelector('#gen-status')?.innerText.includes('Generated 4 samples')")
    assert page.locator("#gen-image img").get_attribute("src")
    assert page.locator("#gen-dist img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "generate.png", full_page=True)


def test_stop_cancels_a_stream(page):
    set_slider(page, "gen-pace", 10)
    page.click("#gen-run")
    page.wait_for_function("document.querySelector('#gen-image img')?.src")
    page.wait_for_timeout(500)
    page.click("#gen-stop")
    page.wait_for_function("document.querySelector('#gen-status')?.innerText.includes('Stopped')")
    page.wait_for_timeout(1500)
    assert "Generated" not in page.locator("#gen-status").inner_text()  # the stream did not finish after all
    set_slider(page, "gen-pace", 0)
    page.click("#gen-run")  # the queue is free again
    page.wait_for_function("document.querySelector('#gen-status')?.innerText.includes('Generated 4 samples')")


def test_upload_paint_and_complete(page):
    page.get_by_role("tab", name="Complete").click()
    page.wait_for_selector("#cmp-editor input[type=file]", state="attached")
    zoom = page.locator("#cmp-editor .zoom-number").inner_text()
    page.locator("#cmp-editor input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_7.png"))
    # the editor zooms to fit once the image is drawn: painting before that is lost
    page.wait_for_function(f"document.querySelector('#cmp-editor .zoom-number')?.innerText !== {zoom!r}")
    page.wait_for_timeout(300)
    canvas = page.locator("#cmp-editor canvas").first
    box = canvas.bounding_box()
    assert box and box["width"] > 50
    x0, y, x1 = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5, box["x"] + box["width"] * 0.8
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=15)
    page.mouse.up()
    set_slider(page, "cmp-pace", 0.5)
    page.click("#cmp-run")
    page.wait_for_function("document.querySelector('#cmp-status')?.innerText.includes('plain completion')")
    status = page.locator("#cmp-status").inner_text()
    assert "3 plain completions" in status and " 0 pixels" not in status
    assert page.locator("#cmp-image img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "complete.png", full_page=True)


def test_inspect_and_click_a_pixel(page):
    page.get_by_role("tab", name="Inspect").click()
    page.wait_for_selector("#insp-image input[type=file]", state="attached")
    page.locator("#insp-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_2.png"))
    page.wait_for_function("document.querySelector('#insp-table')?.innerText.includes('bits/dim')")
    page.wait_for_function("document.querySelector('#insp-pixel-text')?.innerText.includes('Most surprising')")
    image = page.locator("#insp-surprise img")
    image.wait_for(state="visible")
    box = image.bounding_box()
    # the map is 28 model pixels wide (plus a colour bar below): click the centre of pixel (row 3, col 20)
    body_height = box["width"]  # square map; the legend adds height below it
    image.click(position={"x": box["width"] * 20.5 / 28, "y": body_height * 3.5 / 28})
    page.wait_for_function("document.querySelector('#insp-pixel-text')?.innerText.includes('Pixel (row 3, col 20)')")
    assert "Most surprising" not in page.locator("#insp-pixel-text").inner_text()
    assert page.locator("#insp-dist img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "inspect.png", full_page=True)


def test_compress_download_and_decode(page, tmp_path):
    page.get_by_role("tab", name="Compress").click()
    page.wait_for_selector("#zip-image input[type=file]", state="attached")
    page.locator("#zip-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_7.png"))
    page.wait_for_function("document.querySelector('#zip-status')?.innerText.includes('ready to download')")
    table = page.locator("#zip-table").inner_text()
    assert "tiny-bin" in table and "PNG (lossless)" in table and "WEBP (lossless)" in table
    link = page.locator("#zip-file a").first
    with page.expect_download() as download:
        link.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name.endswith(".tiny-bin.prnn") and path.read_bytes().startswith(b"PRNN")
    page.locator("#unzip-file input[type=file]").set_input_files(str(path))
    page.wait_for_function("document.querySelector('#unzip-status')?.innerText.includes('checksum holds')")
    assert page.locator("#unzip-image img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "compress.png", full_page=True)
