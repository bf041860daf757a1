"""The app in headless Chromium (playwright): every tab, a model switch clearing stale outputs, auto class.

Screenshots go to tests/screenshots/ (gitignored). Skipped when /usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import chart_bars, running_app, save_tiny_checkpoints
from PIL import Image, ImageSequence

import pixelrnn
from pixelrnn import compress, ui
from pixelrnn.ui.computation_tab import GAP_PX, HEADER_PX, PANEL_PX, TITLE_PX
from pixelrnn.ui.pictures import PENDING_RGB

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 240_000  # a whole completion on a busy 2-core machine; under pytest-timeout's 300 s per test

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: the browser test needs Debian's chromium (`sudo apt-get install "
                f"chromium`; `bash .ci/run` installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"), multiscale=True)
    for name, arch, layers in (("tiny-diag", "diagonal_bilstm", 2), ("tiny-cnn", "pixelcnn", 3)):  # How it computes
        pixelrnn.build_model(arch, 1, 2, 12, 12, hidden=4, layers=layers).save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def server(checkpoints):
    with running_app(checkpoints) as url:
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


def choose(page, elem_id: str, value: str) -> None:
    """Pick `value` in a Gradio dropdown."""
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=value, exact=True).click()


def brush_stroke(page, elem_id: str, fraction: float) -> None:
    """A horizontal brush stroke across the editor's canvas, `fraction` of its height down."""
    canvas = page.locator(f"#{elem_id} canvas").first
    box = canvas.bounding_box()
    assert box and box["width"] > 50
    y = box["y"] + box["height"] * fraction
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=15)
    page.mouse.up()


def wait_for_status(page, elem_id: str, text: str, timeout: float = TIMEOUT_MS) -> None:
    """Wait until #elem_id's text includes `text`; past the timeout, fail with what it says instead."""
    try:
        page.wait_for_function(f"document.querySelector('#{elem_id}')?.innerText.includes({text!r})", timeout=timeout)
    except sync_api.TimeoutError:
        pytest.fail(f"#{elem_id} never said {text!r} in {timeout / 1000:.0f} s; it says "
                    f"{page.locator(f'#{elem_id}').inner_text(timeout=5000)!r}")


def paint_bottom_half(page, elem_id: str) -> None:
    """Brush strokes over the lower half of the editor's canvas."""
    for fraction in (0.55, 0.62, 0.69, 0.76):  # the image fills the middle of the canvas
        brush_stroke(page, elem_id, fraction)


def upload_to_editor(page, elem_id: str, path) -> None:
    """Upload `path` into an image editor and wait until its canvas shows it and holds still: painting before the
    editor has drawn and zoomed the image is lost. (Its zoom level is no sign: two images of one size share it.)"""
    page.wait_for_selector(f"#{elem_id} input[type=file]", state="attached")
    canvas = page.locator(f"#{elem_id} canvas").first
    before = canvas.screenshot()
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    shots = [before]
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while shots[-1] == before or len(shots) < 3 or shots[-1] != shots[-2]:
        assert time.monotonic() < deadline, f"the editor never showed {path.name}"
        page.wait_for_timeout(250)
        shots.append(canvas.screenshot())


def test_generate(page):
    set_slider(page, "gen-pace", 0.5)
    page.click("#gen-run")
    wait_for_status(page, "gen-status", "Generated 4 samples")
    assert page.locator("#gen-image img").get_attribute("src")
    assert page.locator("#gen-dist img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "generate.png", full_page=True)


def test_generate_with_a_blank_seed_gives_new_images_each_time(page):
    """Defect: the seed box said "blank: random" but held 0, so every click drew the same images."""
    assert page.locator("#gen-seed input").input_value() == ""
    set_slider(page, "gen-pace", 0)
    seeds, images = [], []
    for _ in range(2):
        before = page.evaluate("document.querySelector('#gen-status')?.innerText ?? ''")
        page.click("#gen-run")
        page.wait_for_function(f"(s => s.startsWith('Generated 4 samples') && s !== {before!r})"
                               "(document.querySelector('#gen-status')?.innerText ?? '')")
        status = page.locator("#gen-status").inner_text()
        seeds.append(status.split("(seed ")[1].split(",")[0])
        images.append(page.evaluate("fetch(document.querySelector('#gen-image img').src).then(r => r.arrayBuffer())"
                                    ".then(b => Array.from(new Uint8Array(b)).join(','))"))
    assert seeds[0] != seeds[1] and images[0] != images[1]


def shown_image(page, elem_id: str) -> np.ndarray | None:
    """The picture an output image shows now, decoded, or None."""
    data = page.evaluate(f"(img => img ? fetch(img.src).then(r => r.arrayBuffer()).then(b => Array.from("
                         f"new Uint8Array(b))) : null)(document.querySelector('#{elem_id} img'))")
    return None if not data else np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


def test_the_receptive_field_overlay_shows_in_the_stream(page):
    """The checkbox switches the overlay on for this session: once the fields are measured (in the background,
    on first use), streamed frames tint the current pixel's receptive field blue."""
    tints = [ui.pictures.field_tint(np.array(v)) for v in ((0, 0, 0), (255, 255, 255))]  # over black, white
    page.check("#gen-field input")
    set_slider(page, "gen-pace", 6)
    try:
        found, deadline = False, time.monotonic() + 120
        while not found and time.monotonic() < deadline:
            if not page.locator("#gen-status").inner_text().endswith("…"):
                page.click("#gen-run")  # again: the first run may finish before the fields are measured
                page.wait_for_timeout(500)
            image = shown_image(page, "gen-image")
            found = image is not None and any((image == tint).all(-1).any() for tint in tints)
            page.wait_for_timeout(300)
        assert found
    finally:
        page.click("#gen-stop")
        page.uncheck("#gen-field input")
        set_slider(page, "gen-pace", 0)


def test_two_tabs_generating_at_once_both_animate_and_finish(page, server):
    """Two visitors at once: both streams run side by side (each shows progress while the other does) and both
    finish; neither waits for the other."""
    other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})  # another visitor
    try:
        other.goto(server, wait_until="load")
        other.wait_for_selector("#gen-run")
        for tab in (page, other):
            set_slider(tab, "gen-pace", 3)
        before = [tab.locator("#gen-status").inner_text() for tab in (page, other)]
        for tab in (page, other):
            tab.click("#gen-run")
        overlapped, deadline = False, time.monotonic() + 60
        statuses = before
        while time.monotonic() < deadline:
            statuses = [tab.locator("#gen-status").inner_text() for tab in (page, other)]
            overlapped |= all(s.startswith("Pixel ") for s in statuses)
            if all(s.startswith("Generated") and s != b for s, b in zip(statuses, before, strict=True)):
                break
            page.wait_for_timeout(100)
        assert overlapped and all(s.startswith("Generated 4 samples") for s in statuses), statuses
    finally:
        other.close()
        set_slider(page, "gen-pace", 0)


def test_stop_cancels_a_stream(page):
    set_slider(page, "gen-pace", 10)
    page.click("#gen-run")
    page.wait_for_function("document.querySelector('#gen-image img')?.src")
    page.wait_for_timeout(500)
    page.click("#gen-stop")
    wait_for_status(page, "gen-status", "Stopped")
    page.wait_for_timeout(1500)
    status = page.locator("#gen-status").inner_text()
    assert "Stopped" in status, "no late frame of the cancelled stream overwrote the status"
    assert "Generated" not in status  # the stream did not finish after all
    set_slider(page, "gen-pace", 0)
    page.click("#gen-run")  # the queue is free again
    page.wait_for_function("document.querySelector('#gen-status')?.innerText.startsWith('Generated 4 samples')")
    summary = page.locator("#gen-status").inner_text()
    page.click("#gen-stop")  # nothing runs: the finished run keeps its summary (with its seed)
    page.wait_for_timeout(1500)
    assert page.locator("#gen-status").inner_text() == summary


def complete_with_one_stroke(page, image: str, pace: float) -> None:
    """On the Complete tab: upload `image`, paint a stroke across its middle, complete it and wait until done."""
    page.get_by_role("tab", name="Complete").click()
    upload_to_editor(page, "cmp-editor", ui.ASSETS_DIR / image)
    brush_stroke(page, "cmp-editor", 0.5)
    set_slider(page, "cmp-pace", pace)
    page.click("#cmp-run")
    wait_for_status(page, "cmp-status", "plain completion")


def test_upload_paint_and_complete(page):
    complete_with_one_stroke(page, "mnist_7.png", 0.5)
    status = page.locator("#cmp-status").inner_text()
    assert "3 plain completions" in status and " 0 pixels" not in status
    assert page.locator("#cmp-image img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "complete.png", full_page=True)


def test_a_new_input_clears_finished_results_and_leaves_a_running_stream_alone(page):
    """Defect (CI): the editor reports a brush stroke late, sometimes after Run; the clear it set off landed
    mid-stream and took the completions away, and the stream's last frames (which skip unchanged outputs) did not
    bring them back: the summary stood next to no image. Now a change reported while a stream runs leaves it alone,
    and one reported after the run clears its results. (The report of an upload comes seconds late on a busy
    machine: this test once waited for a summary that a legitimate late clear had taken away.)"""
    complete_with_one_stroke(page, "mnist_2.png", 0)
    upload_to_editor(page, "cmp-editor", ui.ASSETS_DIR / "mnist_7.png")  # after the run: its results go
    page.wait_for_function("document.querySelectorAll('#cmp-image img').length === 0")
    assert page.locator("#cmp-status").inner_text().strip() == ""
    brush_stroke(page, "cmp-editor", 0.5)
    set_slider(page, "cmp-pace", 10)  # the longest animation: the upload below and its report land within it
    page.click("#cmp-run")
    page.wait_for_function("document.querySelector('#cmp-image img')?.src")
    # from here on, note each time the completions leave the page, with the status line they left under
    page.evaluate("""() => {
        const box = document.querySelector('#cmp-image'), status = document.querySelector('#cmp-status');
        let shown = true, lastStatus = status.innerText;
        window.clearedUnder = [];
        new MutationObserver(() => {
            if (status.innerText.trim()) lastStatus = status.innerText.trim();
            const now = Boolean(box.querySelector('img'));
            if (shown && !now) window.clearedUnder.push(lastStatus);
            shown = now;
        }).observe(document.querySelector('#tab-complete'), {childList: true, subtree: true, characterData: true});
    }""")
    # a new image while the stream runs (not waiting for the editor to draw it: nothing is painted on it)
    page.locator("#cmp-editor input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_2.png"))
    page.wait_for_timeout(1000)
    assert page.locator("#cmp-status").inner_text().endswith("…")  # the stream was still running
    page.wait_for_function("document.querySelector('#cmp-status')?.innerText.includes('plain completion')"
                           " || window.clearedUnder.length")
    page.wait_for_timeout(1000)  # time for a report that comes late, after the stream
    cleared_under, shown, status = page.evaluate("""() => [window.clearedUnder,  // read at one instant
        Boolean(document.querySelector('#cmp-image img')?.src), document.querySelector('#cmp-status').innerText]""")
    # the editor reports the upload some time later: while the stream runs (usually), its results must stay;
    # after the stream (a busy machine), they go, as after any run
    assert not any(line.endswith("…") for line in cleared_under), cleared_under
    assert cleared_under or (shown and "plain completion" in status), (shown, status)


def click_pixel(page, elem_id: str, row: int, col: int) -> None:
    """Click the centre of model pixel (row, col) of a 28x28 Inspect map (its colour bar adds height below)."""
    image = page.locator(f"#{elem_id} img")
    image.wait_for(state="visible")
    box = image.bounding_box()
    image.click(position={"x": box["width"] * (col + 0.5) / 28, "y": box["width"] * (row + 0.5) / 28})


def shown_chart(page) -> str:
    return page.evaluate("document.querySelector('#insp-dist #pixel-dist-data')?.outerHTML ?? ''")


def test_inspect_shows_the_clicked_pixels_distribution_every_time(page, checkpoints):
    """Defect: after a click on pixel A then on B, the text named B while the bars still showed A's distribution."""
    page.get_by_role("tab", name="Inspect").click()
    page.wait_for_selector("#insp-image input[type=file]", state="attached")
    page.locator("#insp-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_2.png"))
    page.wait_for_function("document.querySelector('#insp-table')?.innerText.includes('bits/dim')")
    page.wait_for_function("document.querySelector('#insp-pixel-text')?.innerText.includes('Most surprising')")
    studio = ui.Studio(ui.Registry(checkpoints, device="cpu"))
    for row, col in ((3, 20), (14, 9), (20, 14)):  # three different pixels, one after the other
        click_pixel(page, "insp-surprise", row, col)
        page.wait_for_function("document.querySelector('#insp-pixel-text')?.innerText"
                               f".includes('Pixel (row {row}, col {col})')")
        page.wait_for_function(f"document.querySelector('#insp-dist #pixel-dist-data')?.dataset.row === '{row}'"
                               f" && document.querySelector('#insp-dist #pixel-dist-data')?.dataset.col === '{col}'")
        expected, _, _ = studio.inspector.pixel("tiny-bin", ui.ASSETS_DIR / "mnist_2.png", None, row, col)
        assert chart_bars(shown_chart(page)) == chart_bars(expected)  # the bars are this pixel's, not the last one's
    assert "Most surprising" not in page.locator("#insp-pixel-text").inner_text()
    assert page.locator("#insp-influence img").get_attribute("src")  # the clicked pixel's influence map
    bar = page.locator("#insp-dist rect").first
    assert "probability" in bar.locator("title").text_content()  # each bar says its value on hover
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "inspect.png", full_page=True)


def test_compress_download_and_decode(page, tmp_path):
    page.get_by_role("tab", name="Compress").click()
    page.wait_for_selector("#zip-image input[type=file]", state="attached")
    page.locator("#zip-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_7.png"))
    wait_for_status(page, "zip-status", "ready to download")
    table = page.locator("#zip-table").inner_text()
    assert "tiny-bin" in table and "PNG (lossless)" in table and "WEBP (lossless)" in table
    link = page.locator("#zip-file a").first
    with page.expect_download() as download:
        link.click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name.endswith(".tiny-bin.prnn") and path.read_bytes()[0] == compress.FORMAT_V2
    page.locator("#unzip-file input[type=file]").set_input_files(str(path))
    wait_for_status(page, "unzip-status", "checksum holds")
    assert page.locator("#unzip-image img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "compress.png", full_page=True)


def test_switching_model_clears_stale_outputs(page):
    page.get_by_role("tab", name="Generate").click()
    set_slider(page, "gen-n", 1)  # "Generated 1 sample": this run's status, not the one an earlier test left
    set_slider(page, "gen-pace", 0)
    page.click("#gen-run")
    wait_for_status(page, "gen-status", "Generated 1 sample ")
    assert page.locator("#gen-image img").count() == 1
    choose(page, "gen-model", "tiny-rgb")
    page.wait_for_function("document.querySelectorAll('#gen-image img').length === 0")
    assert "Generated" not in page.locator("#gen-status").inner_text()
    # a stream still running when the model changes is stopped: after a frame or two already on the way, the image
    # stands still (a running stream sends a new frame every 50 ms) and the run never finishes
    set_slider(page, "gen-pace", 10)
    page.click("#gen-run")
    page.wait_for_function("document.querySelector('#gen-image img')?.src")
    choose(page, "gen-model", "tiny-bin")
    wait_for_status(page, "gen-status", "Stopped: the model was changed")
    page.wait_for_timeout(1500)
    shown = page.evaluate("document.querySelector('#gen-image img')?.src ?? null")
    page.wait_for_timeout(1500)
    assert page.evaluate("document.querySelector('#gen-image img')?.src ?? null") == shown
    assert page.locator("#gen-status").inner_text() == "Stopped: the model was changed."  # said once, kept
    set_slider(page, "gen-n", 4)
    set_slider(page, "gen-pace", 0)


def test_complete_the_cifar_cat_with_auto_class(page):
    page.get_by_role("tab", name="Complete").click()
    choose(page, "cmp-model", "tiny-rgb")
    page.wait_for_function(f"document.querySelector('#cmp-class input')?.value === {ui.AUTO_CLASS!r}")
    upload_to_editor(page, "cmp-editor", ui.ASSETS_DIR / "cifar_cat.png")
    for fraction in (0.69, 0.76):  # the lowest rows: SMC completions of half a colour image took over 60 s in CI
        brush_stroke(page, "cmp-editor", fraction)
    set_slider(page, "cmp-pace", 0)
    page.click("#cmp-run")
    wait_for_status(page, "cmp-status", "each completion draws its class from it", RUN_TIMEOUT_MS)
    assert page.locator("#cmp-image img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "complete-auto-class.png", full_page=True)
    choose(page, "cmp-model", "tiny-bin")  # the cat's completions do not outlive the model
    page.wait_for_function("document.querySelectorAll('#cmp-image img').length === 0")


def test_upscale(page):
    page.get_by_role("tab", name="Upscale").click()
    assert page.locator("#ups-model input").input_value() == "tiny-ms"
    page.wait_for_selector("#ups-image input[type=file]", state="attached")
    page.locator("#ups-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_7.png"))
    page.wait_for_selector("#ups-image img")  # Run straight away: a late change report leaves the stream alone
    set_slider(page, "ups-pace", 0.5)
    page.click("#ups-run")
    wait_for_status(page, "ups-status", "full-size samples")
    for elem_id in ("ups-small", "ups-samples", "ups-entropy", "ups-dist"):
        assert page.locator(f"#{elem_id} img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "upscale.png", full_page=True)
    page.locator("#ups-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_2.png"))
    page.wait_for_function("document.querySelectorAll('#ups-samples img').length === 0")  # no stale samples
    assert "full-size samples" not in page.locator("#ups-status").inner_text()


def computed(frame: np.ndarray, panel: int, size: int) -> np.ndarray:
    """(size, size) bool: the positions of the `panel`-th map of the first row of an animation frame that are
    computed (not the pending grey)."""
    scale = PANEL_PX // size
    left, top = GAP_PX + panel * (size * scale + GAP_PX), HEADER_PX + TITLE_PX
    centres = frame[top + scale // 2 : top + size * scale : scale, left + scale // 2 : left + size * scale : scale]
    return ~(centres == PENDING_RGB).all(-1)


@pytest.mark.parametrize("model,arch", [("tiny-bin", "Row LSTM"), ("tiny-diag", "Diagonal BiLSTM"),
                                        ("tiny-cnn", "PixelCNN")])
def test_how_it_computes_plays_the_pass_in_the_architectures_order(page, model, arch):
    """The animation's frames fill in the first layer row by row (Row LSTM), each direction diagonal by diagonal
    (Diagonal BiLSTM: r + c, and r + (W - 1 - c) on the mirrored map), or one whole block per frame (PixelCNN)."""
    page.get_by_role("tab", name="How it computes").click()
    choose(page, "how-model", model)
    page.wait_for_selector("#how-image input[type=file]", state="attached")
    page.locator("#how-image input[type=file]").set_input_files(str(ui.ASSETS_DIR / "mnist_7.png"))
    page.wait_for_selector("#how-image img")
    page.wait_for_timeout(500)  # the upload's change event clears the outputs: let it land before Play
    page.click("#how-run")
    page.wait_for_function(f"document.querySelector('#how-text')?.innerText.includes({arch!r})")
    data = page.evaluate("fetch(document.querySelector('#how-animation img').src).then(r => r.arrayBuffer())"
                         ".then(b => Array.from(new Uint8Array(b)))")
    animation = Image.open(io.BytesIO(bytes(data)))
    frames = [np.asarray(animation.convert("RGB")) for _ in ImageSequence.Iterator(animation)]
    size = 28 if model == "tiny-bin" else 12
    rows, cols = np.mgrid[:size, :size]
    if arch == "Row LSTM":  # one layer: a row per frame, top to bottom
        assert len(frames) == size
        for t, frame in enumerate(frames):
            assert np.array_equal(computed(frame, 0, size), rows <= t), t
    elif arch == "Diagonal BiLSTM":  # two layers of 2 x 12 - 1 diagonals; the first layer's
        assert len(frames) == 2 * (2 * size - 1)
        for t, frame in enumerate(frames[: 2 * size - 1]):
            assert np.array_equal(computed(frame, 0, size), rows + cols <= t), t
            assert np.array_equal(computed(frame, 1, size), rows + (size - 1 - cols) <= t), t
    else:  # three blocks, one per frame
        assert len(frames) == 3
        for t, frame in enumerate(frames):
            assert [computed(frame, k, size).all() for k in range(3)] == [k <= t for k in range(3)]
            assert [computed(frame, k, size).any() for k in range(3)] == [k <= t for k in range(3)]
    assert page.locator("#how-figure img").get_attribute("src")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"computation-{model}.png", full_page=True)


def test_on_a_phone_generate_and_the_stream_fit_the_first_screen(page, server):
    """Defect: at 390x844 the Generate button sat at the bottom of the screen and the samples started below it,
    so a visitor on a phone never saw the stream without scrolling."""
    phone = page.context.browser.new_page(viewport={"width": 390, "height": 844})
    try:
        phone.set_default_timeout(TIMEOUT_MS)
        phone.goto(server, wait_until="load")
        phone.wait_for_selector("#gen-run")
        run = phone.locator("#gen-run").bounding_box()
        assert run["y"] + run["height"] < 844
        phone.click("#gen-run")
        phone.wait_for_function("document.querySelector('#gen-image img')?.src")
        image = phone.locator("#gen-image img").bounding_box()
        assert image["y"] + image["height"] / 2 < 844 and phone.evaluate("window.scrollY") == 0
        # the distribution is shown near its own size (its text 12-14 px): a 600-px chart shrank to 55 px high
        phone.wait_for_function("document.querySelector('#gen-dist img')?.naturalWidth > 0")
        shown, natural = phone.evaluate("(img => [img.getBoundingClientRect().width, img.naturalWidth])"
                                        "(document.querySelector('#gen-dist img'))")
        assert shown >= 0.8 * natural and phone.locator("#gen-dist img").bounding_box()["height"] >= 95
        SCREENSHOTS.mkdir(exist_ok=True)
        phone.screenshot(path=SCREENSHOTS / "phone-generate.png")
    finally:
        phone.close()
