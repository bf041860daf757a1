"""Pure-function tests of pixelrnn/ui/: uploads, masks, rendering, throttling, click mapping, registry, endpoints."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import chart_bars, save_tiny_checkpoints
from PIL import Image

import pixelrnn
from pixelrnn import images, ui
from pixelrnn.images import GAP_PX, levels_to_uint8

BIN = ui.uploads.ModelSpec("row_lstm", 1, 2, 28, 28)
RGB = ui.uploads.ModelSpec("pixelcnn", 3, 256, 32, 32, 10, class_names=tuple("abcdefghij"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """Tiny untrained checkpoints: binarized 1x28x28, class-conditional RGB 3x32x32, multi-scale binarized."""
    root = save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))
    pixelrnn.build_model("row_lstm", 1, 2, 28, 28, hidden=4, layers=1, factor=2).save_pretrained(root / "tiny-ms")
    (root / "no-config").mkdir()
    (root / "bad-config").mkdir()
    (root / "bad-config" / "config.json").write_text('{"arch": "nope"}')
    (root / "no-weights").mkdir()
    (root / "no-weights" / "config.json").write_text((root / "tiny-bin" / "config.json").read_text())
    return root


@pytest.fixture(autouse=True)
def _uploads_in_tmp(tmp_path_factory, monkeypatch):
    """Files the tests write under pytest's temp folder count as uploads: Gradio's upload folder is GRADIO_TEMP_DIR."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def studio(checkpoints) -> ui.Studio:
    return ui.Studio(ui.Registry(checkpoints, device="cpu"))


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height but holds almost no data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# --- decoding and conversion -----------------------------------------------------------------------

def test_modes_convert_to_model_format(tmp_path):
    gradient = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # 64x64, left dark, right light
    rgb = np.stack([gradient, gradient[::-1], np.full_like(gradient, 200)], axis=2)
    rgba = np.dstack([rgb, np.full_like(gradient, 255)])
    rgba[:, :8, 3] = 0  # transparent left edge
    sources = {
        "rgb": save(Image.fromarray(rgb), tmp_path / "rgb.png"),
        "rgba": save(Image.fromarray(rgba), tmp_path / "rgba.png"),
        "gray": save(Image.fromarray(gradient), tmp_path / "gray.png"),
        "palette": save(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE), tmp_path / "p.png"),
        "16bit": save(Image.fromarray(gradient.astype(np.uint16) * 257), tmp_path / "g16.png"),
        "jpeg": save(Image.fromarray(rgb), tmp_path / "rgb.jpg", quality=95),
        "bw": save(Image.fromarray(gradient > 127), tmp_path / "bw.png"),
    }
    for name, path in sources.items():
        for spec in (BIN, RGB):
            prepared = ui.uploads.prepare_image(str(path), spec)
            assert prepared.pixels.shape == (spec.channels, spec.height, spec.width), name
            assert prepared.pixels.dtype == np.int64
            assert prepared.pixels.min() >= 0 and prepared.pixels.max() < spec.levels, name
    # 16-bit keeps its brightness: the same as the 8-bit image
    assert np.array_equal(ui.uploads.prepare_image(sources["16bit"], RGB).pixels, ui.uploads.prepare_image(sources["gray"], RGB).pixels)
    assert any("8 bits" in n for n in ui.uploads.prepare_image(sources["16bit"], RGB).notes)
    # transparency becomes black
    prepared = ui.uploads.prepare_image(sources["rgba"], RGB)
    assert prepared.pixels[:, :, :3].max() == 0 and any("black" in n for n in prepared.notes)
    assert any("grayscale copied" in n for n in ui.uploads.prepare_image(sources["gray"], RGB).notes)
    assert any("colour converted" in n for n in ui.uploads.prepare_image(sources["rgb"], BIN).notes)


def test_binarization_threshold_and_levels():
    assert images.quantize(np.array([0, 127, 128, 255]), 2).tolist() == [0, 0, 1, 1]
    assert images.quantize(np.array([0, 255]), 256).tolist() == [0, 255]
    assert images.quantize(np.array([0, 63, 64, 255]), 4).tolist() == [0, 0, 1, 3]
    assert levels_to_uint8(np.array([0, 1]), 2).tolist() == [0, 255]


def test_aspect_is_kept_by_centre_crop(tmp_path):
    assert images.center_crop_box(64, 32, 28, 28) == (16, 0, 48, 32)
    assert images.center_crop_box(30, 90, 32, 32) == (0, 30, 30, 60)
    wide = np.zeros((32, 96), dtype=np.uint8)
    wide[:, 32:64] = 255  # only the centre third is white
    prepared = ui.uploads.prepare_image(save(Image.fromarray(wide), tmp_path / "wide.png"), BIN, invert="no")
    assert prepared.pixels.all() and prepared.crop_box == (32, 0, 64, 32)


def test_light_background_is_inverted_for_single_channel_models():
    prepared = ui.uploads.prepare_image(ui.ASSETS_DIR / "drawn_4.png", BIN)
    assert any("inverted" in n for n in prepared.notes)
    assert prepared.pixels[0, 0, 0] == 0 and prepared.pixels.sum() > 20
    assert not any("inverted" in n for n in ui.uploads.prepare_image(ui.ASSETS_DIR / "mnist_7.png", BIN).notes)


def test_upscaled_examples_round_trip_exactly():
    """A nearest-upscaled 28x28 image comes back pixel for pixel (box filter)."""
    source = np.asarray(Image.open(ui.ASSETS_DIR / "mnist_7.png"))[::8, ::8]
    prepared = ui.uploads.prepare_image(ui.ASSETS_DIR / "mnist_7.png", ui.uploads.ModelSpec("row_lstm", 1, 256, 28, 28))
    assert np.array_equal(prepared.pixels[0], source)


@pytest.mark.parametrize("case, message", [
    ("tiny", "only 1x1 pixels"),
    ("truncated", "truncated or corrupt"),
    ("text", "not an image"),
    ("bomb", "too large"),
    ("big", "too large"),
    ("missing", "cannot be read: upload it again"),
    ("none", "No image"),
])
def test_bad_uploads_give_clear_errors(tmp_path, case, message):
    if case == "tiny":
        source = save(Image.new("RGB", (1, 1)), tmp_path / "tiny.png")
    elif case == "truncated":
        full = save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
                    tmp_path / "full.png")
        source = tmp_path / "truncated.png"
        source.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif case == "text":
        source = tmp_path / "notes.png"
        source.write_text("this is not an image")
    elif case == "bomb":
        source = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    elif case == "big":
        source = png_header_only(tmp_path / "big.png", 6000, 6000)  # under PIL's limit, over the app's
    elif case == "missing":
        source = {"path": str(tmp_path / "gone.png")}
    else:
        source = None
    with pytest.raises(gr.Error, match=message):
        ui.uploads.prepare_image(source, RGB)


# --- masks ----------------------------------------------------------------------------------------------

def painted_layer(size: tuple[int, int], box: tuple[int, int, int, int] | None) -> np.ndarray:
    """An RGBA brush layer (h, w, 4), painted red inside box (left, top, right, bottom)."""
    layer = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    if box:
        left, top, right, bottom = box
        layer[top:bottom, left:right] = (255, 0, 0, 255)
    return layer


def test_mask_any_coverage_and_alignment():
    prepared = ui.uploads.PreparedImage(np.zeros((1, 28, 28), dtype=np.int64), (224, 224), (0, 0, 224, 224))
    mask = ui.uploads.extract_mask([painted_layer((224, 224), (80, 16, 81, 17))], prepared, 28, 28)  # one pixel
    assert mask.sum() == 1 and mask[2, 10]
    mask = ui.uploads.extract_mask([painted_layer((224, 224), (0, 112, 224, 224))], prepared, 28, 28)  # bottom half
    assert mask[14:].all() and not mask[:14].any()
    assert not ui.uploads.extract_mask([painted_layer((224, 224), None)], prepared, 28, 28).any()
    assert not ui.uploads.extract_mask([], prepared, 28, 28).any()
    # a layer of another size is stretched onto the image; a layer without alpha counts non-zero pixels
    assert ui.uploads.extract_mask([painted_layer((112, 112), (0, 56, 112, 112))], prepared, 28, 28)[14:].all()
    gray = np.zeros((224, 224), dtype=np.uint8)
    gray[:, :112] = 255
    assert ui.uploads.extract_mask([gray], prepared, 28, 28)[:, :14].all()


def test_mask_follows_the_crop():
    prepared = ui.uploads.PreparedImage(np.zeros((1, 28, 28), dtype=np.int64), (300, 200), (50, 0, 250, 200))
    mask = ui.uploads.extract_mask([painted_layer((300, 200), (0, 0, 50, 200))], prepared, 28, 28)  # cropped away
    assert not mask.any()
    mask = ui.uploads.extract_mask([painted_layer((300, 200), (50, 0, 51, 200))], prepared, 28, 28)  # first kept column
    assert mask[:, 0].all() and mask.sum() == 28


def test_pool_any_upsamples_too():
    small = np.zeros((4, 4), dtype=bool)
    small[1, 2] = True
    pooled = ui.uploads.pool_any(small, 28, 28)
    assert pooled.sum() == 49 and pooled[7:14, 14:21].all()


def test_editor_parts():
    assert ui.uploads.editor_parts({"background": "a.png", "layers": ["m.png"], "composite": "c.png"}) == ("a.png", ["m.png"])
    assert ui.uploads.editor_parts({"background": None, "layers": [], "composite": "c.png"}) == ("c.png", [])
    for empty in (None, {"background": None, "layers": [], "composite": None}):
        with pytest.raises(gr.Error, match="No image"):
            ui.uploads.editor_parts(empty)


# --- arguments ------------------------------------------------------------------------------------------

def test_argument_checks():
    assert ui.params.parse_int("4", "n", 1, 16) == 4 and ui.params.parse_int(4.0, "n", 1, 16) == 4
    for bad in (0, 17, 2.5, "x", None):
        with pytest.raises(gr.Error, match="from 1 to 16"):
            ui.params.parse_int(bad, "Number of samples", 1, 16)
    for bad in (0, -1, "nan", "inf", None, 11):
        with pytest.raises(gr.Error, match="Temperature"):
            ui.params.parse_temperature(bad)
    assert ui.params.parse_temperature("0.5") == 0.5
    assert 0 <= ui.params.parse_seed(None) < 2**32 and ui.params.parse_seed("") >= 0 and ui.params.parse_seed(7) == 7
    assert ui.params.parse_class(None, BIN) is None
    assert ui.params.parse_class("c", RGB) == 2 and ui.params.parse_class(3, RGB) == 3 and ui.params.parse_class("9", RGB) == 9
    assert ui.params.parse_class(ui.AUTO_CLASS, RGB, allow_auto=True) is None
    assert ui.params.parse_class("auto (most likely)", RGB, allow_auto=True) is None  # the earlier name still works
    for bad, message in ((10, "out of range"), (-1, "out of range"), ("zebra", "Unknown class"), (None, "choose")):
        with pytest.raises(gr.Error, match=message):
            ui.params.parse_class(bad, RGB)
    assert ui.params.parse_mode("plain") is False and ui.params.parse_mode(ui.MODES[1]) is True
    with pytest.raises(gr.Error, match="Completion mode"):
        ui.params.parse_mode("magic")
    with pytest.raises(gr.Error, match="Animation"):
        ui.params.parse_pace(-1)


# --- rendering, clicks, throttling ----------------------------------------------------------------------

def test_rendering_shapes():
    scale = ui.pictures.display_scale(28, 28)
    cells = ui.pictures.render_images(np.zeros((3, 1, 28, 28), dtype=np.int64), 2, scale,
                             pending=np.ones((28, 28), dtype=bool), cursor=(0, 0))
    assert len(cells) == 3 and cells[0].shape == (28 * scale, 28 * scale, 3)
    assert tuple(cells[0][scale // 2, scale // 2]) == ui.pictures.PENDING_RGB and tuple(cells[0][0, 0]) == ui.pictures.CURSOR_RGB
    grid = images.tile(cells, 2)
    assert grid.shape == (2 * 28 * scale + GAP_PX, 2 * 28 * scale + GAP_PX, 3)
    dist = ui.pictures.render_distribution(np.full((256, 3), 1 / 256), [0, 128, 255], "title")
    assert dist.ndim == 3 and dist.shape[2] == 3 and dist.shape[0] > 3 * 60
    heat = ui.pictures.render_heatmap(np.arange(28 * 28, dtype=float).reshape(28, 28), scale, "bits")
    assert heat.shape == (28 * scale + ui.pictures.LEGEND_PX, 28 * scale, 3)
    assert ui.pictures.colormap(np.array([0.0, 1.0]), 1.0).tolist() == [list(ui.pictures.VIRIDIS[0]), list(ui.pictures.VIRIDIS[-1])]


def test_distribution_bars_are_as_tall_as_their_probabilities_and_the_marked_one_orange():
    from pixelrnn.ui.pictures import MARK_RGB, draw_bars

    canvas = np.full((40, 100, 3), 255, dtype=np.uint8)
    heights = np.array([0.0, 5.0, 20.0, 0.4, 10.0, 0, 0, 0, 0, 3.0])
    draw_bars(canvas, (10, 30), (0.0, 10.0), heights, (0, 0, 255), marked=4)
    coloured = (canvas != 255).any(-1)  # (rows, columns)
    assert [int(coloured[:, 10 * v + 5].sum()) for v in range(10)] == [0, 6, 21, 0, 11, 0, 0, 0, 0, 4]
    assert not coloured[:, 9::10].any() and not coloured[:10].any() and not coloured[31:].any()  # gaps, margins
    assert tuple(canvas[30, 45]) == MARK_RGB and tuple(canvas[30, 15]) == (0, 0, 255)
    chart = ui.pictures.render_distribution(np.array([[0.2], [0.8]]), [0])
    assert (chart == MARK_RGB).all(-1).sum() > (chart == (90, 90, 90)).all(-1).sum() / 8  # a bar a quarter as tall


def test_distribution_chart_shows_every_level_and_marks_the_true_value_per_channel():
    probs = np.random.default_rng(0).dirichlet(np.ones(256), 3).T  # (levels, C)
    html = ui.inspect_tab.distribution_html(probs, [7, 128, 255], 4, 9)
    where, channels = chart_bars(html)
    assert where == (4, 9) and len(channels) == 3 and "G: true value 128" in html
    for c, true in enumerate((7, 128, 255)):
        assert [v for v, _, _ in channels[c]] == list(range(256))
        assert np.allclose([p for _, p, _ in channels[c]], probs[:, c], rtol=1e-5)
        assert [v for v, _, marked in channels[c] if marked] == [true]
    _, [bars] = chart_bars(ui.inspect_tab.distribution_html(np.array([[0.9], [0.1]]), [1], 0, 0))
    assert bars == [(0, 0.9, False), (1, 0.1, True)]


def test_click_to_pixel():
    scale = ui.pictures.inspect_scale(28, 28)
    assert ui.pictures.click_to_pixel([0, 0], 28, 28, scale) == (0, 0)
    assert ui.pictures.click_to_pixel([scale * 5 + 1, scale * 3 + scale - 1], 28, 28, scale) == (3, 5)  # [x, y] -> (row, col)
    assert ui.pictures.click_to_pixel([28 * scale - 1, 28 * scale - 1], 28, 28, scale) == (27, 27)
    assert ui.pictures.click_to_pixel([10, 28 * scale + 5], 28, 28, scale) is None  # the colour bar under a map
    assert ui.pictures.click_to_pixel([-1, 3], 28, 28, scale) is None
    assert ui.pictures.click_to_pixel(None, 28, 28, scale) is None
    for bad in ([float("nan"), 3], [3, float("inf")], ["-inf", 2]):  # a crafted request: no ValueError
        assert ui.pictures.click_to_pixel(bad, 28, 28, scale) is None


def test_frame_gate_throttles_and_never_repeats():
    now = [0.0]
    gate = ui.streaming.FrameGate(interval=0.05, clock=lambda: now[0])
    sent = []
    for k in range(100):  # 1 s of steps every 10 ms
        now[0] = k * 0.01
        if gate.due(final=k == 99):
            sent.append(k)
    assert sent[0] == 0 and sent[-1] == 99 and 19 <= len(sent) <= 22
    assert all(b - a >= 5 for a, b in itertools.pairwise(sent[:-1]))
    gate.spent(0.1)  # costly frames: at most one per 0.4 s (frames take <= 1/5 of the time)
    now[0] = 2.0
    assert gate.due()
    now[0] = 2.35
    assert not gate.due()
    now[0] = 2.41
    assert gate.due() and gate.due(final=True)
    streams = [8]  # 8 streams running on a 2-core server: each sends a quarter of the frames
    shared = ui.streaming.FrameGate(interval=0.05, clock=lambda: now[0], streams=lambda: streams[0], full_rate=2)
    sent = []
    for k in range(100):
        now[0] = 10 + k * 0.01
        if shared.due(final=k == 99):
            sent.append(k)
    assert sent[0] == 0 and sent[-1] == 99 and 5 <= len(sent) <= 7
    streams[0] = 1  # the others finished: back to the full rate
    now[0] += 0.06
    assert shared.due()
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    assert gate.fresh("image", image) is image
    assert isinstance(gate.fresh("image", image.copy()), type(gr.skip()))  # identical content: skipped
    assert gate.fresh("dist", image) is image  # another output
    changed = image.copy()
    changed[0, 0] = 1
    assert gate.fresh("image", changed) is changed


def test_sampler_resumes_on_other_threads(studio):
    """Gradio resumes streaming generators on any worker thread: every step must still run without autograd."""
    model = studio.registry.load("tiny-bin")
    steps = pixelrnn.sample_steps(model, 1, seed=4, every=97)
    first, rest, errors = next(steps), [], []

    def finish() -> None:
        try:
            rest.extend(steps)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    thread.join()
    assert not errors and first.done.sum() == 97 and rest[-1].done.all()
    assert not first.image.requires_grad and not rest[-1].probs.requires_grad
    assert torch.equal(rest[-1].image, pixelrnn.sample(model, 1, seed=4))
    assert not torch.is_inference_mode_enabled()


def test_pacer_and_with_last():
    now, slept = [0.0], []
    pacer = ui.streaming.Pacer(100, 2.0, clock=lambda: now[0], sleep=slept.append)
    pacer.wait(50)
    assert slept == [pytest.approx(1.0)]
    now[0] = 5.0
    pacer.wait(60)  # behind schedule: no sleep
    assert len(slept) == 1
    assert list(ui.streaming.with_last([1, 2, 3])) == [(1, False), (2, False), (3, True)]
    assert list(ui.streaming.with_last([])) == []


# --- registry and endpoints ---------------------------------------------------------------------------

def test_registry_discovery_and_lazy_cached_loading(checkpoints, studio):
    registry = studio.registry
    assert registry.names == ["bad-config", "no-weights", "tiny-bin", "tiny-ms", "tiny-rgb"]  # no-config skipped
    assert "arch must be one of" in registry.problem("bad-config") and registry.problem("tiny-bin") is None
    fresh = ui.Registry(checkpoints, device="cpu")
    assert fresh._cache == {}  # nothing loaded at discovery
    assert fresh.load("tiny-bin") is fresh.load("tiny-bin")
    assert fresh.spec("tiny-rgb").class_names[3] == "cat" and fresh.spec("tiny-ms").factor == 2
    assert fresh.default() == "tiny-bin"
    with pytest.raises(gr.Error, match="no weights yet"):
        fresh.load("no-weights")
    with pytest.raises(gr.Error, match="Unknown model"):
        fresh.load("../etc")
    env = ui.Registry.from_env(hub_ids=[])
    assert env.root == ui.settings.REPO_ROOT / "checkpoints"


def test_hub_models_are_listed_at_once_and_loaded_lazily(checkpoints, tmp_path, monkeypatch):
    fakehub = pytest.importorskip("fakehub")
    from huggingface_hub import constants

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    files = {p.name: p.read_bytes() for p in (checkpoints / "tiny-rgb").iterdir() if p.is_file()}
    with fakehub.FakeHub({"user/tiny-rgb": files}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("PIXELRNN_HUB_MODELS", "user/tiny-rgb, user/missing")
        registry = ui.Registry.from_env(checkpoints, device="cpu")
        assert registry.names[-2:] == ["user/tiny-rgb", "user/missing"] and hub.count() == 0  # nothing fetched yet
        studio = ui.Studio(registry)
        card, _, _, _ = studio.model_card("user/tiny-rgb")
        assert "Hugging Face Hub" in card and "CIFAR-10" in card and registry.spec("user/tiny-rgb").num_classes == 10
        assert "Generated 1 sample of class 'cat'" in final_frame(list(
            studio.sampling.generate("user/tiny-rgb", "cat", 1, 1.0, 0, 0)))[2]
        with pytest.raises(gr.Error, match="Cannot load model 'user/missing'"):
            registry.load("user/missing")


def test_the_overlay_tints_exactly_the_current_pixels_measured_receptive_field(studio):
    """Switched on for a session, each streamed frame tints the pixels that the current pixel's distribution
    depends on, as measured from the model (views.pixel_fields), and nothing else; other sessions see none."""
    from types import SimpleNamespace

    from pixelrnn.views import pixel_fields

    model = studio.registry.load("tiny-bin")
    on, off = SimpleNamespace(session_hash="on"), SimpleNamespace(session_hash="off")
    studio.core.show_field("generate", True, on)
    deadline = time.monotonic() + 120  # measured in the background on first use
    while (fields := studio.core.receptive_fields("tiny-bin", model)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fields is not None and np.array_equal(fields, pixel_fields(model).numpy())
    assert not studio.core.shows_field(on, "complete")  # each tab has its own switch
    scale = ui.pictures.grid_scale(28, 28, 1)
    tints = [ui.pictures.field_tint(np.array(v)) for v in ((0, 0, 0), (255, 255, 255))]  # over black, white
    checked = 0
    for image, _, status in studio.sampling.generate("tiny-bin", None, 1, 1.0, 4, 0.2, request=on):
        if not isinstance(image, np.ndarray) or not isinstance(status, str) or not status.startswith("Pixel "):
            continue
        k = int(status.split()[1].replace(",", ""))  # "Pixel k of 784, ...": the k-th pixel was just sampled
        centres = image[scale // 2 :: scale, scale // 2 :: scale][:28, :28]
        tinted = np.zeros((28, 28), dtype=bool)
        for tint in tints:
            tinted |= (centres == tint).all(-1)
        assert np.array_equal(tinted, fields[divmod(k - 1, 28)]), k
        checked += 1
    assert checked >= 2
    plain = [f[0] for f in studio.sampling.generate("tiny-bin", None, 1, 1.0, 4, 0, request=off)]
    assert not any(isinstance(im, np.ndarray) and any((im == t).all(-1).any() for t in tints) for im in plain)


def final_frame(frames: list[tuple]) -> tuple:
    """The last value sent for each output of a stream of (image, dist, status) updates."""
    last = [None, None, None]
    for frame in frames:
        for k, value in enumerate(frame):
            if not isinstance(value, type(gr.skip())):
                last[k] = value
    return tuple(last)


def test_generate_streams_and_matches_direct_sampling(studio):
    frames = list(studio.sampling.generate("tiny-bin", None, 3, 1.0, 11, 0.3))
    assert len(frames) >= 3
    shown = [f[0] for f in frames if isinstance(f[0], np.ndarray)]
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(shown))
    image, dist, status = final_frame(frames)
    expected = pixelrnn.sample(studio.registry.load("tiny-bin"), 3, seed=11)
    scale = ui.pictures.grid_scale(28, 28, 3)
    assert np.array_equal(image, images.tile(ui.pictures.render_images(expected.numpy(), 2, scale), 2))
    assert "Generated 3 samples" in status and "seed 11" in status and dist.ndim == 3


def test_generate_multiscale_and_conditional(studio):
    frames = list(studio.sampling.generate("tiny-ms", None, 1, 1.0, 0, 0))
    assert final_frame(frames)[0].shape == (280, 280, 3)
    frames = list(studio.sampling.generate("tiny-rgb", "cat", 1, 1.0, 5, 0))
    expected = pixelrnn.sample(studio.registry.load("tiny-rgb"), 1, y=3, seed=5)
    expected_image = ui.pictures.render_images(expected.numpy(), 256, ui.pictures.grid_scale(32, 32, 1))[0]
    assert np.array_equal(final_frame(frames)[0], expected_image)


class ByBrightness(torch.nn.Module):
    """A stand-in CIFAR-10 classifier that reads an image's class off its total brightness: its verdict depends on
    which images it is shown."""

    channels, levels, min_contrast = 3, 256, 0.0

    def forward(self, x):
        return torch.nn.functional.one_hot(x.sum((1, 2, 3)) % 10, 10).float()


def test_generate_with_a_class_says_what_an_independent_classifier_reads(studio, monkeypatch):
    monkeypatch.setattr(ui.cards, "classifier_of", lambda dataset: (ByBrightness(), 0.75) if dataset == "cifar10"
                        else None)
    monkeypatch.setitem(studio.registry.entry("tiny-rgb").metrics, "on_class", {"rate": 0.326})
    status = final_frame(studio.sampling.generate("tiny-rgb", "cat", 4, 1.0, 5, 0))[2]
    samples = pixelrnn.sample(studio.registry.load("tiny-rgb"), 4, y=3, seed=5)  # what Generate drew
    read = (samples.sum((1, 2, 3)) % 10).tolist()
    names = studio.registry.spec("tiny-rgb").class_names
    others = "; ".join(f"#{k + 1} as {names[label]!r}" for k, label in enumerate(read) if label != 3)
    assert others, "the stand-in should read some samples as another class"
    assert (f"An independent classifier (75.0% on the test split) reads {read.count(3)} of 4 as 'cat' ({others}); "
            "its card: 32.6% of samples show their class at temperature 1.") in status

    monkeypatch.setattr(ui.cards, "classifier_of", lambda dataset: None)  # none for the data set: nothing said
    status = final_frame(studio.sampling.generate("tiny-rgb", "cat", 1, 1.0, 5, 0))[2]
    assert status.startswith("Generated 1 sample of class 'cat'") and "classifier" not in status


def test_the_shipped_classifiers_load_and_a_broken_one_is_left_out(tmp_path, monkeypatch, caplog):
    classifier, accuracy = ui.cards.classifier_of("mnist")
    assert (classifier.channels, classifier.levels) == (1, 256) and accuracy > 0.98
    ui.cards.classifier_of.cache_clear()
    monkeypatch.setattr(ui.cards, "CLASSIFIERS_DIR", tmp_path)
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "model.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "cifar10" / "config.json").write_text('{"channels": 3, "levels": 256}')
    try:
        assert ui.cards.classifier_of("cifar10") is None and "unreadable" in caplog.text
        assert ui.cards.classifier_of("mnist") is None  # no folder
        spec = dataclasses.replace(RGB, dataset="cifar10")
        assert ui.cards.class_check(spec, torch.zeros(2, 3, 32, 32, dtype=torch.long), 1) == ""
    finally:
        ui.cards.classifier_of.cache_clear()


@pytest.mark.parametrize("args, message", [
    (("tiny-bin", None, 17, 1.0, 0, 0), "from 1 to 16"),
    (("tiny-bin", None, 2, 0, 0, 0), "Temperature"),
    (("tiny-rgb", 10, 2, 1.0, 0, 0), "out of range"),
    (("tiny-rgb", None, 2, 1.0, 0, 0), "class-conditional"),
    (("nope", None, 2, 1.0, 0, 0), "Unknown model"),
])
def test_generate_bad_arguments(studio, args, message):
    with pytest.raises(gr.Error, match=message):
        list(studio.sampling.generate(*args))


def test_complete_full_mask_equals_generation_and_empty_mask_errors(studio):
    background = np.asarray(Image.open(ui.ASSETS_DIR / "mnist_7.png").convert("RGBA"))
    full = {"background": background, "layers": [painted_layer((224, 224), (0, 0, 224, 224))], "composite": None}
    image, _, status = final_frame(list(studio.sampling.complete("tiny-bin", full, None, "plain", 4, 2, 1.0, 9, 0)))
    expected = pixelrnn.sample(studio.registry.load("tiny-bin"), 2, seed=9)
    scale = ui.pictures.display_scale(28, 28)
    original = ui.pictures.masked_original(ui.uploads.prepare_image(background, BIN).pixels, 2, np.ones((28, 28), bool), scale)
    assert np.array_equal(image, images.tile([original, *ui.pictures.render_images(expected.numpy(), 2, scale)], 3))
    assert "784 pixels" in status
    empty = {"background": background, "layers": [painted_layer((224, 224), None)], "composite": None}
    with pytest.raises(gr.Error, match="mask is empty"):
        list(studio.sampling.complete("tiny-bin", empty, None, "plain", 4, 2, 1.0, 9, 0))


def test_complete_keeps_known_pixels_with_smc(studio):
    background = np.asarray(Image.open(ui.ASSETS_DIR / "cifar_cat.png").convert("RGBA"))
    editor = {"background": background, "layers": [painted_layer((256, 256), (64, 64, 192, 192))]}
    frames = list(studio.sampling.complete("tiny-rgb", editor, "cat", ui.MODES[1], 3, 2, 1.0, 1, 0))
    image, _, status = final_frame(frames)
    assert "SMC, 3 particles" in status and "effective sample size" in status
    scale = ui.pictures.display_scale(32, 32)
    known = images.upscale(images.to_rgb(ui.uploads.prepare_image(background, RGB).pixels, 256), scale)
    cell = image[:, 32 * scale + GAP_PX: 2 * 32 * scale + GAP_PX]  # first completion
    assert np.array_equal(cell[: 8 * scale], known[: 8 * scale])  # rows above the hole are unchanged


def test_the_status_says_when_a_sample_is_too_flat_for_any_class(studio, monkeypatch):
    """Defect: the MNIST classifier calls a blank image a 1, so a blank sample drawn for 1 counted as on class."""
    floored = ByBrightness()
    floored.min_contrast = 0.01
    monkeypatch.setattr(ui.cards, "classifier_of", lambda dataset: (floored, 0.75))
    textured = torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(0))
    images = torch.stack([torch.zeros(3, 32, 32, dtype=torch.long), textured])
    names = studio.registry.spec("tiny-rgb").class_names
    status = ui.cards.class_check(studio.registry.spec("tiny-rgb"), images, [0, 0])  # a blank reads as 0 unfloored
    read = names[int(textured.sum()) % 10]
    assert status.startswith(f" An independent classifier (75.0% on the test split) reads {int(read == names[0])}"
                             " of 2 as 'airplane' (#1 as none (nearly blank)")


def test_complete_says_what_the_classifier_reads_in_each_completion(studio, monkeypatch):
    monkeypatch.setattr(ui.cards, "classifier_of", lambda dataset: (ByBrightness(), 0.75))
    background = np.asarray(Image.open(ui.ASSETS_DIR / "cifar_cat.png").convert("RGBA"))
    editor = {"background": background, "layers": [painted_layer((256, 256), (0, 128, 256, 256))]}
    names, scale = studio.registry.spec("tiny-rgb").class_names, ui.pictures.display_scale(32, 32)
    for label in (ui.AUTO_CLASS, "cat"):
        image, _, status = final_frame(studio.sampling.complete("tiny-rgb", editor, label, "plain", 4, 3, 1.0, 2, 0))
        drawn = (status.split("draws its class from it: ")[1].split(".")[0].split(", ") if label == ui.AUTO_CLASS
                 else ["cat"] * 3)
        width = 32 * scale + GAP_PX  # the tile: the original, then each completion
        levels = [image[: 32 * scale, k * width : k * width + 32 * scale][::scale, ::scale] for k in (1, 2, 3)]
        read = [names[int(cell.astype(np.int64).sum()) % 10] for cell in levels]  # what ByBrightness reads
        hits = sum(r == d for r, d in zip(read, drawn, strict=True))
        assert f"An independent classifier (75.0% on the test split) reads {hits} of 3 as " in status
        misses = [f"#{k + 1} as {r!r}" + (f", drawn for {d!r}" if label == ui.AUTO_CLASS else "")
                  for k, (r, d) in enumerate(zip(read, drawn)) if r != d]
        assert misses and all(miss in status for miss in misses)
        assert label != ui.AUTO_CLASS or len(set(drawn)) > 1  # the untrained model's posterior: classes differ
        assert "its card" not in status  # the card's rate is about samples, not completions


def test_inspect_and_pixel(studio):
    view, surprise, _, table, chart, influence, text, row, col = studio.inspector.inspect("tiny-bin", ui.ASSETS_DIR / "mnist_7.png")
    assert chart_bars(chart)[0] == (row, col)
    scale = ui.pictures.inspect_scale(28, 28)
    assert view.shape == (28 * scale, 28 * scale, 3) and surprise.shape[0] == 28 * scale + ui.pictures.LEGEND_PX
    assert "tiny-ms" in table and "no-weights" in table and "bits/dim" in table  # every model of the same format
    assert "tiny-rgb" not in table and "Most surprising pixel" in text and 0 <= row < 28
    chart, influence, text = studio.inspector.pixel("tiny-bin", ui.ASSETS_DIR / "mnist_7.png", None, 3, 4)
    (where, [bars]) = chart_bars(chart)
    maps = pixelrnn.likelihood_maps(studio.registry.load("tiny-bin"),
                                    torch.from_numpy(ui.uploads.prepare_image(ui.ASSETS_DIR / "mnist_7.png", BIN).pixels))
    assert "row 3, col 4" in text and where == (3, 4)
    assert np.allclose([p for _, p, _ in bars], maps["probs"][:, 0, 3, 4].numpy(), rtol=1e-5)
    pixels = torch.from_numpy(ui.uploads.prepare_image(ui.ASSETS_DIR / "mnist_7.png", BIN).pixels)
    strength = pixelrnn.views.influence(studio.registry.load("tiny-bin"), pixels, 3, 4).numpy()
    scale = ui.pictures.inspect_scale(28, 28)
    expected = ui.pictures.render_heatmap(strength, scale, "influence on this pixel")
    ui.pictures.draw_cursor(expected, (3, 4), scale)
    assert np.array_equal(influence, expected) and strength[4:].sum() == strength[3, 4:].sum() == 0 < strength.sum()
    with pytest.raises(gr.Error, match="Row"):
        studio.inspector.pixel("tiny-bin", ui.ASSETS_DIR / "mnist_7.png", None, 28, 0)
    _, _, _, table, *_ = studio.inspector.inspect("tiny-rgb", ui.ASSETS_DIR / "cifar_cat.png", ui.AUTO_CLASS)
    assert "most likely class" in table
    view, _, _, table, chart, influence, text, row, col = studio.inspector.inspect_changed("tiny-bin", None)  # no image
    assert view is None and table is None and chart is None and influence is None and text is None and row is None
    assert col is None


def test_model_card(studio):
    card, samples, curve, sheet = studio.model_card("tiny-rgb")
    assert "PixelCNN" in card and "3.14 bits/dim" in card and "5.500 bits/dim" in card and "Running on | cpu" in card
    assert "| Validation NLL | – |" in card and samples is None and curve is None and sheet is None
    assert "| Does the class show? | not measured" in card  # class-conditional, no on-class rate recorded
    assert "Does the class show?" not in studio.model_card("tiny-bin")[0]  # no classes, no question
    assert "no model.safetensors" in studio.model_card("no-weights")[0]
    assert "tiny-ms" in ui.models_table(studio.registry)


def test_model_card_shows_the_on_class_rate_and_the_samples_it_counted(checkpoints, tmp_path):
    shutil.copytree(checkpoints / "tiny-rgb", tmp_path / "measured")
    metrics = json.loads((tmp_path / "measured" / "metrics.json").read_text())
    on_class = {"rate": 0.324, "interval": [0.2845, 0.3662], "per_class": [0.3] * 10, "samples_per_class": 50,
                "temperature": 1.0}
    (tmp_path / "measured" / "metrics.json").write_text(json.dumps({**metrics, "on_class": on_class}))
    sheet = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(sheet).save(tmp_path / "measured" / "on_class.png")
    card, _, _, shown = ui.Studio(ui.Registry(tmp_path, device="cpu")).model_card("measured")
    assert "| Does the class show? | **32.4%** (95% interval 28.4%-36.6%) of 50 samples per class" in card
    assert np.array_equal(shown, sheet)


def test_how_it_computes_shows_the_models_own_pass(studio, checkpoints, tmp_path):
    """Every frame of the animation is the library's picture of the model's pass at the step its caption names,
    on the image as the model reads it; a second request is served from disk; bad arguments get a sentence."""
    from pixelrnn.ui.computation_tab import frame_steps, render_frame
    from pixelrnn.views import computation, layer_fields

    image = save(Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30), dtype=np.uint8)),
                 tmp_path / "grey.png")
    path, figure, text = studio.computation.play("tiny-bin", image, None, 5)
    assert "Row LSTM" in text and "raster order" in text and figure.ndim == 3
    model = studio.registry.load("tiny-bin")
    _, analysis = studio.core.analysis("tiny-bin", image, None)
    panels = computation(model, torch.from_numpy(analysis.pixels))
    focus = (28 - 7, 14)
    fields = [f.numpy() for f in layer_fields(model, *focus)]
    animation = Image.open(path)
    assert animation.n_frames == len(frame_steps(28)) == 28
    for t in (0, 13, 27):
        animation.seek(t)
        expected = render_frame(panels, t, fields, focus, f"step {t + 1} of 28: layer 1, row {t}")
        assert np.array_equal(np.asarray(animation.convert("RGB")), expected), t
    assert studio.computation.play("tiny-bin", image, None, 5)[0] == path
    assert "the full-size stage, given the small image" in studio.computation.play("tiny-ms", image, None, 2)[2]
    assert "PixelCNN" in studio.computation.play("tiny-rgb", image, ui.AUTO_CLASS, 2)[2]
    for args, message in [(("tiny-bin", image, None, 99), "Animation length"), (("tiny-bin", None), "No image")]:
        with pytest.raises(gr.Error, match=message):
            studio.computation.play(*args)
