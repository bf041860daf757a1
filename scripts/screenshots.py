"""Screenshots of every tab for the README, on the shipped checkpoints: `python scripts/screenshots.py [SECTION ...]`.

Starts the app on a free loopback port, drives it in headless Chromium (as tests/test_browser.py does) and writes
the sections asked for (default: all): `tabs` docs/screenshot-<tab>.png, `fields` docs/receptive-fields.png,
`influence` docs/influence.png, `computation` docs/screenshot-computation.png and docs/computation-<arch>.webp
(the tab's animations), `phone` docs/screenshot-phone.png.
"""

from __future__ import annotations

import functools
import socket
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from test_browser import CHROMIUM, CHROMIUM_ARGS, choose, paint_bottom_half, set_slider, upload_to_editor

import app
from pixelrnn import ui

DOCS = REPO / "docs"
INFLUENCE_PIXEL = (21, 13)  # (row, col) of mnist_7.png: where the stroke above continues
CONDITIONAL_MODEL, CONDITIONAL_CLASS = "mnist-row-lstm-conditional", "3"
MNIST_MODELS = ("binarized-mnist-row-lstm", "binarized-mnist-diagonal-bilstm", "binarized-mnist-pixelcnn")


def wait_for(page, elem_id: str, text: str) -> None:
    page.wait_for_function(f"document.querySelector('#{elem_id}')?.innerText.includes({text!r})")
    page.wait_for_timeout(1500)  # the last image loads after the status


def side_by_side(pictures: list[np.ndarray]) -> np.ndarray:
    """(H, W, 3) uint8 pictures of one height in a row, 12 white pixels after each -> one picture."""
    return np.concatenate([np.pad(p, ((0, 0), (0, 12), (0, 0)), constant_values=255) for p in pictures], 1)


@functools.cache
def in_process_studio() -> ui.Studio:
    """The demo's endpoints on the shipped checkpoints, in this process (for figures made from their outputs)."""
    return ui.Studio(ui.Registry.from_env(None, [], "cpu"))


def receptive_field_shots(page) -> None:
    """docs/receptive-fields.png: a Generate frame with the overlay on, past the middle of the image, for each
    single-scale binarized-MNIST architecture. The frames come from the Generate endpoint itself, in this process
    (the server measures fields in a background thread at the lowest priority; here it waits for them)."""
    import time
    from types import SimpleNamespace

    studio, visitor = in_process_studio(), SimpleNamespace(session_hash="docs")
    studio.core.show_field("generate", True, visitor)
    shots = []
    for name in MNIST_MODELS:
        while studio.core.receptive_fields(name, studio.registry.load(name)) is None:
            time.sleep(1)
        for image, _, status in studio.sampling.generate(name, None, 1, 1.0, 3, 0, visitor):
            if isinstance(status, str) and status.startswith("Pixel ") and int(status.split()[1]) > 420:
                shots.append(image)
                break
    Image.fromarray(side_by_side(shots)).save(DOCS / "receptive-fields.png")


def influence_shots(page) -> None:
    """docs/influence.png: Inspect's influence map of one pixel just below the 7's stroke, for each single-scale
    binarized-MNIST architecture, from the Inspect endpoint itself (in this process)."""
    studio, seven = in_process_studio(), ui.ASSETS_DIR / "mnist_7.png"
    maps = [studio.inspector.pixel(name, seven, None, *INFLUENCE_PIXEL)[1] for name in MNIST_MODELS]
    Image.fromarray(side_by_side(maps)).save(DOCS / "influence.png")


def tab_shots(page) -> None:
    """Every tab but How it computes; Generate and Models on the class-conditional MNIST model: pick a class, and
    its card's reading sheet."""
    choose(page, "gen-model", CONDITIONAL_MODEL)
    choose(page, "gen-class", CONDITIONAL_CLASS)
    set_slider(page, "gen-n", 16)
    set_slider(page, "gen-pace", 0)
    page.click("#gen-run")
    wait_for(page, "gen-status", "Generated")
    page.screenshot(path=DOCS / "screenshot-generate.png", full_page=True)

    page.get_by_role("tab", name="Complete").click()
    choose(page, "cmp-model", "cifar10-pixelcnn-conditional")
    upload_to_editor(page, "cmp-editor", ui.ASSETS_DIR / "cifar_cat.png")
    paint_bottom_half(page, "cmp-editor")
    page.get_by_label("context-aware (SMC)").check()
    set_slider(page, "cmp-pace", 0)
    page.click("#cmp-run")
    wait_for(page, "cmp-status", "completions of")
    page.screenshot(path=DOCS / "screenshot-complete.png", full_page=True)

    page.get_by_role("tab", name="Upscale").click()
    page.locator("#ups-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_2.png"))
    set_slider(page, "ups-pace", 0)
    page.click("#ups-run")
    wait_for(page, "ups-status", "full-size samples")
    page.screenshot(path=DOCS / "screenshot-upscale.png", full_page=True)

    for tab, prefix, done in (("Inspect", "insp", ("insp-pixel-text", "Most surprising")),
                              ("Compress", "zip", ("zip-status", "ready to download"))):
        page.get_by_role("tab", name=tab).click()
        page.locator(f"#{prefix}-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_7.png"))
        wait_for(page, *done)
        page.screenshot(path=DOCS / f"screenshot-{tab.lower()}.png", full_page=True)

    page.get_by_role("tab", name="Models").click()
    choose(page, "card-model", CONDITIONAL_MODEL)
    wait_for(page, "card-text", "Does the class show?")
    page.screenshot(path=DOCS / "screenshot-models.png", full_page=True)


def computation_shots(page) -> None:
    """The How it computes tab on the 7, for each binarized-MNIST architecture: its animation as the app sends it,
    and a screenshot of the tab (Diagonal BiLSTM)."""
    page.get_by_role("tab", name="How it computes").click()
    page.locator("#how-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_7.png"))
    page.wait_for_selector("#how-image img")
    page.wait_for_timeout(1000)
    for arch in ("row-lstm", "pixelcnn", "diagonal-bilstm"):
        choose(page, "how-model", f"binarized-mnist-{arch}")
        page.click("#how-run")
        names = {"row-lstm": "Row LSTM", "pixelcnn": "PixelCNN", "diagonal-bilstm": "Diagonal"}
        wait_for(page, "how-text", names[arch])
        data = page.evaluate("fetch(document.querySelector('#how-animation img').src).then(r => r.arrayBuffer())"
                             ".then(b => Array.from(new Uint8Array(b)))")
        (DOCS / f"computation-{arch}.webp").write_bytes(bytes(data))
    page.wait_for_timeout(4000)  # mid-animation
    page.screenshot(path=DOCS / "screenshot-computation.png", full_page=True)


def phone_shots(browser, url: str) -> None:
    phone = browser.new_page(viewport={"width": 390, "height": 844})  # the first screen, mid-stream
    phone.goto(url, wait_until="load")
    phone.wait_for_selector("#gen-run")
    set_slider(phone, "gen-pace", 4)
    phone.click("#gen-run")
    phone.wait_for_function("document.querySelector('#gen-status')?.innerText.includes('Pixel 3')")
    phone.wait_for_timeout(1500)
    phone.screenshot(path=DOCS / "screenshot-phone.png")


SECTIONS = {"tabs": tab_shots, "fields": receptive_field_shots, "influence": influence_shots,
            "computation": computation_shots}


def main(sections: list[str]) -> None:
    unknown = set(sections) - {*SECTIONS, "phone"}
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}: choose from {[*SECTIONS, 'phone']}")
    demo = app.build_demo(device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **app.launch_kwargs())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(600_000)
            page.goto(f"http://127.0.0.1:{port}", wait_until="load")
            page.wait_for_selector("#gen-run")
            for name, shoot in SECTIONS.items():
                if not sections or name in sections:
                    shoot(page)
            if not sections or "phone" in sections:
                phone_shots(browser, f"http://127.0.0.1:{port}")
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main(sys.argv[1:])
