"""Lossless compression: exact round trips, code length against the model's NLL, clear errors for bad streams."""

import math
import threading

import numpy as np
import pytest
import torch
from conftest import fit
from PIL import Image

import pixelrnn
from pixelrnn.compress import CompressionError, decode, decode_rows, encode, main, read_header


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


def test_bad_streams_are_clear_errors():
    model = tiny("pixelcnn")
    image = torch.randint(0, 2, (1, 6, 6))
    data = encode(model, image, name="tiny")
    with pytest.raises(CompressionError, match="empty"):
        decode(model, b"")
    with pytest.raises(CompressionError, match="magic"):
        decode(model, b"GIF89a" + data[6:])
    with pytest.raises(CompressionError, match="version"):
        decode(model, data[:4] + bytes([9]) + data[5:])
    with pytest.raises(CompressionError, match="truncated"):
        decode(model, data[:-2])  # the coder's last bytes are never zero: they would have been left out
    with pytest.raises(CompressionError, match="trailing"):
        decode(model, data + b"\1" * 8)
    with pytest.raises(CompressionError, match="another model"):
        decode(tiny("row_lstm"), data)
    corrupted = bytearray(data)
    corrupted[len(data) - len(read_header(data)["payload"]) + 3] ^= 0xFF  # the first word's high byte
    with pytest.raises(CompressionError, match="corrupted"):
        decode(model, bytes(corrupted))
    with pytest.raises(ValueError, match="unconditional"):
        encode(model, image, y=1)
    conditional = tiny("pixelcnn", num_classes=3)
    labelled = bytearray(encode(conditional, image, y=2))
    labelled[21:23] = (7).to_bytes(2, "little", signed=True)  # header bytes 21-22: a label the model lacks
    with pytest.raises(CompressionError, match="label does not fit"):
        decode(conditional, bytes(labelled))
    with pytest.raises(ValueError, match="shape"):
        encode(model, image[:, :5])


def test_cli_round_trip(tmp_path, capsys):
    model = tiny("diagonal_bilstm", channels=3, levels=256)
    model.save_pretrained(tmp_path / "model")
    pixels = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    assert main(["encode", str(tmp_path / "model"), str(tmp_path / "in.png"), str(tmp_path / "x.prnn")]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out and "PNG" in out
    assert main(["decode", str(tmp_path / "x.prnn"), str(tmp_path / "out.png")]) == 0  # the model named in the file
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), pixels)
    (tmp_path / "bad.prnn").write_bytes(b"")
    assert main(["decode", str(tmp_path / "bad.prnn"), str(tmp_path / "o.png")]) == 2
    assert "empty" in capsys.readouterr().err
    Image.fromarray(pixels[:5]).save(tmp_path / "small.png")
    assert main(["encode", str(tmp_path / "model"), str(tmp_path / "small.png"), str(tmp_path / "y.prnn")]) == 2
    assert "6x6" in capsys.readouterr().err
