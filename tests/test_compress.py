"""Lossless compression: exact round trips, code length against the model's NLL, clear errors for bad streams."""

import math
import threading
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from conftest import fit
from PIL import Image

import pixelrnn
from pixelrnn.compress import V1_HEADER, CompressionError, decode, decode_rows, encode, main, read_header, weights_hash


def tiny(arch, channels=1, levels=2, size=6, **hparams):
    torch.manual_seed(0)
    return pixelrnn.build_model(arch, channels, levels, size, size, hidden=6, layers=2, **hparams).eval()


@pytest.mark.parametrize("arch", pixelrnn.ARCHS)
@pytest.mark.parametrize("kind", ["grey", "rgb-labels", "multiscale"])
def test_round_trip_is_bit_exact(arch, kind):
    hparams = {"grey": {}, "rgb-labels": {"channels": 3, "levels": 256, "num_classes": 3},
               "multiscale": {"channels": 3, "levels": 16, "factor": 2}}[kind]
    model = tiny(arch, **hparams)
    channels, levels = hparams.get("channels", 1), hparams.get("levels", 2)
    y = 2 if kind == "rgb-labels" else None
    for seed in range(2):
        image = torch.randint(0, levels, (channels, 6, 6), generator=torch.Generator().manual_seed(seed))
        decoded, label = decode(model, encode(model, image, y))
        assert torch.equal(decoded, image) and label == y


@pytest.mark.parametrize("factor", [None, 2])
def test_decoding_row_by_row_from_other_threads(factor):
    """Gradio resumes a streaming generator on whichever worker thread is free, where autograd is on and the
    thread count is the default: decode_rows must set both for every row, and yield every row in order."""
    model = tiny("diagonal_bilstm", channels=3, levels=16, **({"factor": factor} if factor else {}))
    image = torch.randint(0, 16, (3, 6, 6), generator=torch.Generator().manual_seed(0))
    rows, steps = decode_rows(model, encode(model, image)), []

    def resume() -> None:
        torch.set_num_threads(2)
        steps.append(next(rows, None))

    while not steps or steps[-1] is not None:
        thread = threading.Thread(target=resume, daemon=True)
        thread.start()
        thread.join()
    expected = [(0, r) for r in range(3)] + [(1, r) for r in range(6)] if factor else [(0, r) for r in range(6)]
    assert [(stage, r) for stage, r, _ in steps[:-1]] == expected
    assert torch.equal(steps[-2][2][0], image)


@pytest.mark.parametrize("hparams", [{}, {"factor": 2}])
def test_code_length_is_the_nll_of_a_trained_model(hparams):
    images = torch.randint(0, 8, (4, 3, 8, 8), generator=torch.Generator().manual_seed(1))
    images[:, :, ::2] = images[:, :, 1::2]  # some structure to learn
    model = fit(pixelrnn.build_model("row_lstm", 3, 8, 8, 8, hidden=12, layers=2, **hparams), images, steps=60)
    for image in images:
        data = encode(model, image)
        payload_bits = 8 * len(read_header(data)["payload"])
        nll_bits = -model.log_prob(image[None]).item() / math.log(2)
        assert nll_bits * 0.99 - 1 <= payload_bits <= nll_bits * 1.01 + 32, (payload_bits, nll_bits)  # + the flush


def version_1(model, data: bytes, image: torch.Tensor, name: str = "tiny") -> bytes:
    """The same stream in the version-1 layout (32-byte header with the model's name), as older releases wrote."""
    header = read_header(data)
    channels, height, width = image.shape
    words = -(-len(header["payload"]) // 4) * 4
    label = -1 if header["label"] is None else header["label"]
    crc = zlib.crc32(image.long().to(torch.int32).numpy().tobytes())
    fixed = V1_HEADER.pack(b"PRNN", 1, len(name), weights_hash(model), channels, height, width, model.levels, label,
                     getattr(model, "factor", 0), words, crc)
    return fixed + name.encode() + header["payload"]


def test_the_header_is_a_few_bytes_and_old_files_still_decode():
    """Defect: a 63-byte header (32 fixed + the model's name) made a 12-byte MNIST payload a 75-byte file."""
    model, conditional = tiny("pixelcnn"), tiny("pixelcnn", num_classes=3)
    image = torch.randint(0, 2, (1, 6, 6))
    data = encode(model, image)
    assert len(data) - len(read_header(data)["payload"]) == 8  # format, 4 hash bytes, label, 2 CRC bytes
    labelled = encode(conditional, image, y=2)
    assert len(labelled) - len(read_header(labelled)["payload"]) == 8
    for net, stream, y in ((model, data, None), (conditional, labelled, 2)):
        old = version_1(net, stream, image)
        assert old.startswith(b"PRNN") and len(old) > len(stream)
        decoded, label = decode(net, old)
        assert torch.equal(decoded, image) and label == y


def test_bad_streams_are_clear_errors():
    model = tiny("pixelcnn")
    image = torch.randint(0, 2, (1, 6, 6))
    data = encode(model, image)
    with pytest.raises(CompressionError, match="empty"):
        decode(model, b"")
    with pytest.raises(CompressionError, match="magic"):
        decode(model, b"GIF89a" + data[6:])
    with pytest.raises(CompressionError, match="version"):
        old = version_1(model, data, image)
        decode(model, old[:4] + bytes([9]) + old[5:])
    with pytest.raises(CompressionError, match="truncated"):
        decode(model, data[:-2])  # the coder's last bytes are never zero: they would have been left out
    with pytest.raises(CompressionError, match="truncated"):
        decode(model, data[:6])  # inside the header
    with pytest.raises(CompressionError, match="trailing"):
        decode(model, data + b"\1" * 8)
    with pytest.raises(CompressionError, match="another model"):
        decode(tiny("row_lstm"), data)
    corrupted = bytearray(data)
    corrupted[len(data) - len(read_header(data)["payload"]) + 3] ^= 0xFF
    with pytest.raises(CompressionError, match="corrupted"):
        decode(model, bytes(corrupted))
    with pytest.raises(ValueError, match="unconditional"):
        encode(model, image, y=1)
    conditional = tiny("pixelcnn", num_classes=3)
    labelled = bytearray(encode(conditional, image, y=2))
    labelled[5] = 8  # the label byte: label 7, which the model lacks
    with pytest.raises(CompressionError, match="label does not fit"):
        decode(conditional, bytes(labelled))
    with pytest.raises(ValueError, match="shape"):
        encode(model, image[:, :5])


@pytest.mark.parametrize("field,value,message", [
    ("payload", 2**30, "announces"), ("payload", 2**32 - 4, "announces"), ("factor", 255, "factor"),
    ("label", 7, "label does not fit"), ("levels", 256, "levels"),
])
def test_crafted_version_1_headers_are_refused_before_any_allocation(field, value, message):
    """Defect: a 57-byte file whose payload field said 1 GiB made the decoder allocate and copy 1 GiB (4 GB of
    peak memory), then report the image fine; factor 255 and labels the model lacks decoded "fine" too."""
    model = tiny("pixelcnn", num_classes=3)
    image = torch.randint(0, 2, (1, 6, 6))
    old = bytearray(version_1(model, encode(model, image, y=1), image))
    fields = dict(zip(("magic", "version", "name_len", "digest", "c", "h", "w", "levels", "label", "factor",
                       "payload", "crc"), V1_HEADER.unpack_from(old)))
    fields[field] = value
    old[: V1_HEADER.size] = V1_HEADER.pack(*fields.values())
    tracemalloc.start()
    try:
        with pytest.raises(CompressionError, match=message):
            decode(model, bytes(old))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


def test_cli_round_trip(tmp_path, capsys):
    model = tiny("diagonal_bilstm", channels=3, levels=256)
    model.save_pretrained(tmp_path / "model")
    pixels = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    assert main(["encode", str(tmp_path / "model"), str(tmp_path / "in.png"), str(tmp_path / "x.prnn")]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out and "PNG" in out
    assert main(["decode", str(tmp_path / "x.prnn"), str(tmp_path / "o.png")]) == 2  # not a shipped checkpoint's
    assert "pass --model" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "x.prnn"), str(tmp_path / "out.png"), "--model", str(tmp_path / "model")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), pixels)
    (tmp_path / "bad.prnn").write_bytes(b"")
    assert main(["decode", str(tmp_path / "bad.prnn"), str(tmp_path / "o.png")]) == 2
    assert "empty" in capsys.readouterr().err
    Image.fromarray(pixels[:5]).save(tmp_path / "small.png")
    assert main(["encode", str(tmp_path / "model"), str(tmp_path / "small.png"), str(tmp_path / "y.prnn")]) == 2
    assert "6x6" in capsys.readouterr().err
