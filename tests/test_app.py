"""The app over HTTP: gradio_client against app.build_demo() launched on 127.0.0.1 with tiny checkpoints."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import chart_bars, running_app, save_tiny_checkpoints
from gradio_client import Client, handle_file
from PIL import Image

import app
import pixelrnn
from pixelrnn import images, ui
from pixelrnn.images import GAP_PX

GENERATE, COMPLETE, INSPECT, PIXEL, CARD = "/generate", "/complete", "/inspect", "/pixel", "/model_card"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    return save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"), multiscale=True)


@pytest.fixture(scope="module")
def server(checkpoints):
    with running_app(checkpoints) as url:
        yield url


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server, download_files=False, verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Uploads: good images in several modes, masks, and bad files."""
    d = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = {"rgb": d / "rgb.png", "gray": d / "gray.png", "rgba": d / "rgba.png", "palette": d / "p.png",
           "g16": d / "g16.png", "tiny": d / "tiny.png", "text": d / "text.png", "truncated": d / "cut.png",
           "bomb": d / "bomb.png", "mask": d / "mask.png", "empty_mask": d / "empty.png", "full_mask": d / "full.png"}
    Image.fromarray(rgb).save(out["rgb"])
    Image.fromarray(rgb[..., 0]).save(out["gray"])
    Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (64, 64), dtype=np.uint8)])).save(out["rgba"])
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(out["palette"])
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(out["g16"])
    Image.new("RGB", (1, 1)).save(out["tiny"])
    out["text"].write_text("not an image at all")
    out["truncated"].write_bytes(out["rgb"].read_bytes()[:300])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    out["bomb"].write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
                            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    mask = np.zeros((64, 64, 4), dtype=np.uint8)
    mask[32:, :] = (255, 0, 0, 255)  # bottom half
    Image.fromarray(mask).save(out["mask"])
    Image.fromarray(np.zeros((64, 64, 4), dtype=np.uint8)).save(out["empty_mask"])
    Image.fromarray(np.full((64, 64, 4), 255, dtype=np.uint8)).save(out["full_mask"])
    return out


def editor(background: Path, *layers: Path) -> dict:
    return {"background": handle_file(str(background)), "layers": [handle_file(str(p)) for p in layers],
            "composite": None}


def fetch(server: str, value: dict) -> np.ndarray:
    """Download an image output (FileData dict) -> (H, W, 3) uint8."""
    response = httpx.get(value["url"], timeout=30)
    response.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def last_values(frames: list[tuple]) -> list:
    """The last non-empty value of each output over a stream (gr.skip() arrives as a bare update)."""
    last = [None] * len(frames[0])
    for frame in frames:
        for k, value in enumerate(frame):
            if value is not None and value != {"__type__": "update"}:
                last[k] = value
    return last


def expected_grid(model, n: int, seed: int, y: int | None = None) -> np.ndarray:
    x = pixelrnn.sample(model, n, y=y, seed=seed).numpy()
    return images.tile(ui.pictures.render_images(x, model.levels, ui.pictures.grid_scale(model.height, model.width, n)),
                   int(np.ceil(np.sqrt(n))))


def test_api_lists_the_endpoints(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in (GENERATE, COMPLETE, INSPECT, PIXEL, CARD):
        assert name in api
    assert [p["parameter_name"] for p in api[GENERATE]["parameters"]] == [
        "model_name", "class_label", "n", "temperature", "seed", "pace"]


def test_generate_streams_frames_and_the_last_is_the_sample(server, client, checkpoints):
    # paced over 2 s: at 20 frames a second ~40 frames, fewer when frames are costly (a frame takes at most a fifth
    # of the time, FrameGate): a loaded 2-core machine gave 4 frames in 1 s
    frames = list(client.submit("tiny-bin", None, 2, 1.0, 5, 2.0, api_name=GENERATE))
    shown = [f[0] for f in frames if f[0] is not None]
    assert len(shown) >= 3  # intermediate frames arrived
    assert len({im["path"] for im in shown}) == len(shown)  # never the same image twice
    final, dist, status = last_values(frames)
    assert "Generated 2 samples" in status and "seed 5" in status
    # how far it is shows in the status itself (a progress bar over it covered the previous status)
    assert any(isinstance(f[2], str) and f[2].startswith("Pixel ") and " of 784, " in f[2] for f in frames[:-1])
    model = pixelrnn.load(str(checkpoints / "tiny-bin"))
    torch.set_num_threads(1)
    assert np.array_equal(fetch(server, final), expected_grid(model, 2, 5))
    first = fetch(server, shown[0])
    assert (first == ui.pictures.PENDING_RGB).all(axis=2).mean() > 0.5  # the first frame is mostly still to sample
    assert fetch(server, dist).shape[1] > 300


def test_generate_class_conditional_by_name_or_index(server, client, checkpoints):
    by_name = last_values(list(client.submit("tiny-rgb", "cat", 1, 1.0, 3, 0, api_name=GENERATE)))
    by_index = last_values(list(client.submit("tiny-rgb", "3", 1, 1.0, 3, 0, api_name=GENERATE)))
    assert np.array_equal(fetch(server, by_name[0]), fetch(server, by_index[0]))
    assert "'cat'" in by_name[2]


@pytest.mark.parametrize("args, message", [
    (("tiny-bin", None, 40, 1.0, 0, 0), "from 1 to 16"),
    (("tiny-bin", None, 2, 0, 0, 0), "Temperature must be"),
    (("tiny-bin", None, 2, -1, 0, 0), "Temperature must be"),
    (("tiny-rgb", "11", 1, 1.0, 0, 0), "out of range"),
    (("tiny-rgb", "zebra", 1, 1.0, 0, 0), "Unknown class"),
    (("missing-model", None, 1, 1.0, 0, 0), "Unknown model"),
])
def test_generate_bad_arguments(client, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name=GENERATE)


def test_complete_plain_and_smc(server, client, files):
    frames = list(client.submit("tiny-bin", editor(files["rgb"], files["mask"]), None, "plain", 4, 2, 1.0, 1, 0.5,
                                api_name=COMPLETE))
    final, _, status = last_values(frames)
    assert len([f for f in frames if f[0] is not None]) >= 3 and "392 pixels" in status  # the bottom half
    grid = fetch(server, final)
    scale = ui.pictures.display_scale(28, 28)
    assert grid.shape == (28 * scale, 3 * 28 * scale + 2 * GAP_PX, 3)  # original | 2 completions
    top = slice(0, 14 * scale)
    completion = grid[:, 28 * scale + GAP_PX: 2 * 28 * scale + GAP_PX]
    original = grid[:, : 28 * scale]
    assert np.array_equal(completion[top], original[top])  # the unmasked top half is kept
    frames = list(client.submit("tiny-rgb", editor(files["rgb"], files["mask"]), "cat", "context-aware (SMC)", 3, 1,
                                1.0, 1, 0, api_name=COMPLETE))
    assert "SMC, 3 particles" in last_values(frames)[2]


def test_complete_with_auto_class_draws_each_class_from_the_posterior(server, client, files, checkpoints):
    """Defect: "auto" committed every completion to the argmax class with full confidence. Now each completion
    draws its class from the posterior given the known pixels before the region (the top half here), and the
    status says the posterior and whether it is confident."""
    grid, _, status = client.predict("tiny-rgb", editor(files["rgb"], files["mask"]), ui.AUTO_CLASS, "plain", 2, 3,
                                     1.0, 7, 0, api_name=COMPLETE)
    model = pixelrnn.load(str(checkpoints / "tiny-rgb"))
    names = ui.registry.spec_of(model, "cifar10").class_names
    x = ui.uploads.prepare_image(Image.open(files["rgb"]), ui.registry.spec_of(model, "cifar10")).tensor()
    top = torch.zeros(32, 32, dtype=torch.bool)
    top[:16] = True
    with torch.inference_mode():
        per_class = model.log_prob(x[None].expand(10, -1, -1, -1), torch.arange(10), None, top)
    posterior = torch.softmax(per_class.double(), 0)
    best = int(posterior.argmax())
    assert f"the posterior given the 512 known pixels before the region is {names[best]!r} {posterior[best]:.0%}" \
        in status
    drawn = torch.multinomial(posterior.float(), 3, replacement=True, generator=torch.Generator().manual_seed(7))
    assert f"each completion draws its class from it: {', '.join(names[k] for k in drawn.tolist())}." in status
    hole = ~top
    torch.set_num_threads(1)
    expected = pixelrnn.sample(model, 3, y=drawn, image=x, mask=hole, seed=7)
    scale = ui.pictures.display_scale(32, 32)
    completions = fetch(server, grid)[:, 32 * scale + GAP_PX:]
    assert np.array_equal(completions[:, : 32 * scale], ui.pictures.render_images(expected.numpy(), 256, scale)[0])
    _, _, status = client.predict("tiny-rgb", editor(files["rgb"], files["full_mask"]), ui.AUTO_CLASS, "plain", 2, 1,
                                  1.0, 7, 0, api_name=COMPLETE)
    assert "no known pixel comes before the region: the uniform prior" in status


@pytest.mark.parametrize("image", ["rgba", "palette", "g16", "gray", "rgb"])
def test_complete_accepts_any_image_mode(client, files, image):
    for model, label in (("tiny-rgb", "dog"), ("tiny-bin", None)):
        status = client.predict(model, editor(files[image], files["mask"]), label, "plain", 2, 1, 1.0, 0, 0,
                                api_name=COMPLETE)[2]
        assert "completion" in status


@pytest.mark.parametrize("background, mask, message", [
    ("rgb", "empty_mask", "mask is empty"),
    ("rgb", None, "mask is empty"),
    ("text", "mask", "not an image"),
    ("truncated", "mask", "truncated or corrupt"),
    ("tiny", "mask", "only 1x1 pixels"),
    ("bomb", "mask", "too large"),
    ("rgb", "text", "not an image"),
])
def test_complete_bad_uploads(client, files, background, mask, message):
    layers = [files[mask]] if mask else []
    with pytest.raises(Exception, match=message):
        client.predict("tiny-bin", editor(files[background], *layers), None, "plain", 2, 1, 1.0, 0, 0,
                       api_name=COMPLETE)


def test_complete_bad_arguments(client, files):
    with pytest.raises(Exception, match="from 1 to 8"):
        client.predict("tiny-bin", editor(files["rgb"], files["mask"]), None, "plain", 2, 9, 1.0, 0, 0,
                       api_name=COMPLETE)
    with pytest.raises(Exception, match="Particles"):
        client.predict("tiny-bin", editor(files["rgb"], files["mask"]), None, "context-aware (SMC)", 99, 1, 1.0, 0,
                       0, api_name=COMPLETE)
    with pytest.raises(Exception, match="No image"):
        client.predict("tiny-bin", {"background": None, "layers": [], "composite": None}, None, "plain", 2, 1, 1.0,
                       0, 0, api_name=COMPLETE)


def test_full_mask_equals_generation(server, client, files, checkpoints):
    final = client.predict("tiny-bin", editor(files["rgb"], files["full_mask"]), None, "plain", 2, 1, 1.0, 21, 0,
                           api_name=COMPLETE)[0]
    scale = ui.pictures.display_scale(28, 28)
    completion = fetch(server, final)[:, 28 * scale + GAP_PX:]
    torch.set_num_threads(1)
    expected = pixelrnn.sample(pixelrnn.load(str(checkpoints / "tiny-bin")), 1, seed=21).numpy()
    assert np.array_equal(completion, ui.pictures.render_images(expected, 2, scale)[0])


def test_inspect_and_pixel(server, client, files):
    view, surprise, entropy, table, chart, influence, text, row, col = client.predict(
        "tiny-bin", handle_file(str(files["rgb"])), None, api_name=INSPECT)
    assert chart_bars(chart)[0] == (row, col)
    scale = ui.pictures.inspect_scale(28, 28)
    assert fetch(server, view).shape == (28 * scale, 28 * scale, 3)
    assert fetch(server, surprise).shape == (28 * scale + ui.pictures.LEGEND_PX, 28 * scale, 3)
    assert fetch(server, entropy).shape == (28 * scale + ui.pictures.LEGEND_PX, 28 * scale, 3)
    assert "tiny-bin" in table and "bits/dim" in table and "Most surprising" in text and 0 <= row < 28
    chart, influence, text = client.predict("tiny-bin", handle_file(str(files["rgb"])), None, 4, 7, api_name=PIXEL)
    assert fetch(server, influence).shape == (28 * scale + ui.pictures.LEGEND_PX, 28 * scale, 3)
    where, [bars] = chart_bars(chart)  # binary: one bar per level, the true value marked
    assert "row 4, col 7" in text and where == (4, 7)
    assert [v for v, _, _ in bars] == [0, 1] and sum(p for _, p, _ in bars) == pytest.approx(1, abs=1e-5)
    true_p = [p for _, p, marked in bars if marked]
    assert len(true_p) == 1 and f"surprise {-np.log2(true_p[0]):.2f} bits" in text
    table = client.predict("tiny-rgb", handle_file(str(files["palette"])), ui.AUTO_CLASS, api_name=INSPECT)[3]
    assert "most likely class" in table
    with pytest.raises(Exception, match="not an image"):
        client.predict("tiny-bin", handle_file(str(files["text"])), None, api_name=INSPECT)
    with pytest.raises(Exception, match="Column"):
        client.predict("tiny-bin", handle_file(str(files["rgb"])), None, 0, 99, api_name=PIXEL)


def test_model_card(client):
    card, samples, curve, sheet = client.predict("tiny-rgb", api_name=CARD)
    assert samples is None and curve is None and sheet is None  # the tiny checkpoint ships none
    assert "PixelCNN" in card and "CIFAR-10" in card and "3.14 bits/dim" in card and "cpu" in card
    with pytest.raises(Exception, match="Unknown model"):
        client.predict("../../etc", api_name=CARD)


def test_eight_concurrent_clients_get_their_own_samples(server, checkpoints):
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            c = Client(server, download_files=False, verbose=False)
            final = last_values(list(c.submit("tiny-bin", None, 2, 1.0, seed, 0, api_name=GENERATE)))[0]
            results[seed] = fetch(server, final)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=one, args=(100 + k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 8
    torch.set_num_threads(1)
    model = pixelrnn.load(str(checkpoints / "tiny-bin"))
    for seed, image in results.items():
        assert np.array_equal(image, expected_grid(model, 2, seed)), seed


def test_slow_animations_do_not_hold_the_sampler(server):
    """Defect: three Generate requests animating over 20 s held every sampling slot, and every other visitor
    waited for them. Generate's workers now do the sampling and a stream only replays its recording at its pace:
    with five 20-s animations running, a full-speed request finishes while all five still animate."""
    clients = [Client(server, download_files=False, verbose=False) for _ in range(6)]
    slow = [c.submit("tiny-bin", None, 1, 1.0, k, ui.settings.MAX_PACE_S, api_name=GENERATE)
            for k, c in enumerate(clients[:5])]
    try:
        for job in slow:  # each one is streaming (holds whatever slot it takes)
            for _ in range(1200):
                if job.outputs() or job.done():
                    break
                time.sleep(0.05)
            assert job.outputs() and not job.done()
        _, _, status = clients[5].predict("tiny-bin", None, 1, 1.0, 9, 0, api_name=GENERATE)
        assert "Generated 1 sample" in status
        assert not any(job.done() for job in slow)
    finally:
        for job in slow:
            job.cancel()


@pytest.mark.parametrize("path", ["/file=/etc/passwd", "/gradio_api/file=/etc/passwd",
                                  "/gradio_api/file=" + str(Path(app.__file__).resolve()),
                                  "/gradio_api/file=" + str(Path(app.__file__).resolve().parent / "pixelrnn/ui/settings.py"),
                                  "/gradio_api/file=../../../../etc/passwd"])
def test_files_outside_the_app_are_refused(server, path):
    response = httpx.get(server + path, timeout=10)
    assert response.status_code in (403, 404) and "root:" not in response.text and "import" not in response.text


def test_example_assets_are_served(server):
    asset = ui.ASSETS_DIR / "mnist_7.png"
    response = httpx.get(f"{server}/gradio_api/file={asset}", timeout=10)
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"


# --- Compress ------------------------------------------------------------------------------------------------

COMPRESS, DECOMPRESS = "/compress", "/decompress"


@pytest.fixture(scope="module")
def prnn(server, client, files, tmp_path_factory) -> dict:
    """The RGB upload compressed with the tiny RGB model through the app, and the frames of that stream."""
    frames = list(client.submit("tiny-rgb", handle_file(str(files["rgb"])), ui.AUTO_CLASS, api_name=COMPRESS))
    table, download, status = last_values(frames)
    response = httpx.get(download["url"], timeout=30)
    response.raise_for_status()
    path = tmp_path_factory.mktemp("prnn") / Path(download["path"]).name
    path.write_bytes(response.content)
    return {"frames": frames, "table": table, "name": download["path"], "path": path, "status": status}


def test_compress_shows_sizes_and_offers_the_file(prnn, checkpoints, files):
    table = prnn["table"]
    assert "**`tiny-rgb`**" in table and "| PNG (lossless) |" in table and "| WEBP (lossless) |" in table
    assert "uncompressed (256 levels) | 3,072 | 8.000" in table
    assert prnn["name"].endswith(".tiny-rgb.prnn") and "ready to download" in prnn["status"]
    data = prnn["path"].read_bytes()
    row = next(line for line in table.splitlines() if "tiny-rgb" in line)
    assert f"| {len(data):,} |" in row  # the table gives the file's size
    model = pixelrnn.load(str(checkpoints / "tiny-rgb"))
    spec = ui.registry.spec_of(model, "cifar10")
    prepared = ui.uploads.prepare_image(Image.open(files["rgb"]), spec)
    with torch.inference_mode():
        per_class = model.log_prob(prepared.tensor()[None].expand(10, -1, -1, -1), torch.arange(10))
    image, label = pixelrnn.compress.decode(model, data)
    assert np.array_equal(image.numpy(), prepared.pixels) and label == int(per_class.argmax())  # auto: most likely
    nll = pixelrnn.bits_per_dim(-float(per_class.max()), 3 * 32 * 32)
    payload_bits = 8 * len(pixelrnn.compress.read_header(data)["payload"])
    assert len(data) * 8 - payload_bits == 64 and "8 B header" in row
    assert f"| {nll:.3f} |" in row and abs(payload_bits / 3072 - nll) < 0.01  # the code length is the NLL


def test_decompress_streams_rows_then_verifies(server, client, prnn, files, checkpoints):
    frames = list(client.submit(handle_file(str(prnn["path"])), api_name=DECOMPRESS))
    shown = [f[0] for f in frames if f[0] and "url" in f[0]]
    assert len(shown) >= 2 and "not verified yet" in frames[0][1]
    final, status = last_values(frames)
    assert "the checksum holds" in status and "tiny-rgb" in status
    model = pixelrnn.load(str(checkpoints / "tiny-rgb"))
    prepared = ui.uploads.prepare_image(Image.open(files["rgb"]), ui.registry.spec_of(model, "cifar10"))
    scale = ui.pictures.display_scale(32, 32, 280)
    assert np.array_equal(fetch(server, final), ui.pictures.render_images(prepared.pixels[None], 256, scale)[0])
    first = fetch(server, shown[0])
    assert (first == ui.pictures.PENDING_RGB).all(axis=2).mean() > 0.5  # the first frame is mostly still to decode


def test_decompress_refuses_bad_files(server, prnn, tmp_path):
    data = prnn["path"].read_bytes()
    bad = {"empty.prnn": (b"", "empty"), "magic.prnn": (b"GIF89a" + data[6:], "wrong magic"),
           "short.prnn": (data[:-3], None),
           "foreign.prnn": (data[:1] + bytes(4) + data[5:], "does not have")}  # weights no model here has
    flipped = bytearray(data)
    flipped[-1] ^= 0x55
    bad["flipped.prnn"] = (bytes(flipped), "checksum")
    for name, (content, message) in bad.items():
        path = tmp_path / name
        path.write_bytes(content)
        client = Client(server, download_files=False, verbose=False)
        job = client.submit(handle_file(str(path)), api_name=DECOMPRESS)
        with pytest.raises(Exception, match=message or "cannot be decoded|does not have"):
            job.result(timeout=60)
        outputs = job.outputs()
        if name == "flipped.prnn":  # its last byte fails only at the end: the stream began
            assert len(outputs) > 2
        if outputs:  # a stream that began ends with the image cleared, never a wrong one shown as decoded
            assert outputs[-1][0] is None and "Not decoded" in outputs[-1][1]


# --- Upscale -------------------------------------------------------------------------------------------------

UPSCALE = "/upscale"


def test_upscale_streams_samples_that_keep_the_small_image(server, client, checkpoints):
    frames = list(client.submit("tiny-ms", handle_file(str(ui.ASSETS_DIR / "mnist_7.png")), 2, 1.0, 4, 0.5,
                                api_name=UPSCALE))
    small, samples, dist, entropy, status = last_values(frames)
    assert "2 full-size samples of the 14x14 image" in status and "-log p = " in status and "binarized" in status
    assert len([f for f in frames if f[1] and "url" in f[1]]) >= 3  # the samples arrived as a stream
    model = pixelrnn.load(str(checkpoints / "tiny-ms"))
    prepared = ui.uploads.prepare_image(Image.open(ui.ASSETS_DIR / "mnist_7.png"), ui.registry.spec_of(model))
    x = prepared.tensor()
    torch.set_num_threads(1)
    expected = pixelrnn.sample(model, 2, image=x, mask=model.open_pixels(28, 28), seed=4)
    assert torch.equal(expected[:, :, ::2, ::2], x[None, :, ::2, ::2].expand(2, -1, -1, -1))  # the input's pixels
    scale = ui.pictures.grid_scale(28, 28, 2)
    grid = images.tile(ui.pictures.render_images(expected.numpy(), 2, scale), 2)
    assert np.array_equal(fetch(server, samples), grid)
    assert np.array_equal(fetch(server, small), ui.pictures.render_images(prepared.pixels[None, :, ::2, ::2], 2, 2 * scale)[0])
    maps = pixelrnn.likelihood_maps(model, x)
    nats = float(maps["nll_bits"].sum()) * np.log(2)
    assert f"-log p = {nats:.2f} nats" in status
    assert fetch(server, entropy).shape[0] > 28 * scale and fetch(server, dist).shape[1] > 300


def test_upscale_needs_a_multiscale_model(client):
    with pytest.raises(Exception, match="not a Multi-Scale model, so it cannot upscale: pick `tiny-ms`"):
        client.predict("tiny-bin", handle_file(str(ui.ASSETS_DIR / "mnist_7.png")), 1, 1.0, 0, 0, api_name=UPSCALE)
    with pytest.raises(Exception, match="No image"):
        client.predict("tiny-ms", None, 1, 1.0, 0, 0, api_name=UPSCALE)
