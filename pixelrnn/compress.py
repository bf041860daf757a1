"""Lossless compression with a PixelRNN: the model's conditionals drive a range coder.

python -m pixelrnn.compress encode MODEL in.png out.prnn [--label K]
python -m pixelrnn.compress decode out.prnn out.png [--model MODEL]

Sub-pixels are coded in generation order (raster, then R -> G -> B; a Multi-Scale model codes
its small image first, then the pixels that the small image leaves open), each with the
distribution the model gives it, by constriction's range coder. Encoder and decoder compute
those distributions through one code path: the cached stepper of pixelrnn.sampling, in
float32 on one CPU thread, fed the same partial image at every step (the encoder reveals the
image sub-pixel by sub-pixel exactly as the decoder rebuilds it). That makes both sides'
probabilities bit-identical; the tests check it on every architecture.

File layout (version 2, 8 bytes of header for an unconditional or 10-class model): a format byte, the first
4 bytes of the model's weight hash (the decoder finds the model whose weights match), the class label + 1
(0: none) as a LEB128 varint, 16 bits of the pixels' CRC-32, then the range coder's bytes (trailing zero
bytes left out; the decoder reads missing bytes as zeros). Version 1 files (a 32-byte header with the model's
name) still decode; every field of theirs is checked against the model and the file's size before anything
is allocated.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import constriction
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pixelrnn.model import Model, MultiScalePixelRNN, PixelRNN
from pixelrnn.steppers import CachedStepper

FORMAT_V2 = 0xF2  # the first byte of a version-2 file (a version-1 file starts with b"PRNN")
HASH_BYTES = 4  # of the weight hash in a version-2 header: enough to tell a handful of models apart
MAGIC_V1 = b"PRNN"
# version 1: magic, version, name length, first 8 bytes of the weights' SHA-256, C, H, W, levels, label (-1: none),
# multi-scale factor (0: none), the coder's bytes (whole 32-bit words), CRC-32 of the pixels; then the name, payload
V1_HEADER = struct.Struct("<4sBB8sBHHHhBII")
MAX_V1_ZERO_BYTES = 64  # a version-1 header announces the payload with the zero bytes left out: a few, never more


class CompressionError(ValueError):
    """A stream that cannot be decoded: empty, foreign, truncated, corrupted, or written by another model."""


def weights_hash(model: Model) -> bytes:
    """The first 8 bytes of the SHA-256 of the model's weights (names, shapes and float32 bytes): the model's identity in the header."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.digest()[:8]


def _single(model: Model) -> PixelRNN:
    return model.small if isinstance(model, MultiScalePixelRNN) else model


def _shape(model: Model) -> tuple[int, int, int, int]:
    large = model.large if isinstance(model, MultiScalePixelRNN) else model
    return large.channels, large.height, large.width, large.levels


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """One CPU thread (the float32 sums then run in one fixed order on both sides), no autograd (inference mode).
    Both settings belong to the calling thread, and a generator may be resumed by another one (Gradio does): enter
    this afresh after every yield."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(threads)


Symbol = Callable[[np.ndarray, int, int, int, int], int]  # (probabilities (levels,), stage, c, r, j) -> value


def _code(model: Model, x: torch.Tensor, y: torch.Tensor | None, symbol: Symbol, progress: bool
          ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Visit every coded sub-pixel in order; symbol(...) gives its value, written into the image before the
    next distribution is computed. Stage 0 is the (small, for a Multi-Scale model) image, stage 1 the full one.
    Yields (stage, row, image (1, C, h, w) so far) after every row."""
    multiscale = isinstance(model, MultiScalePixelRNN)
    with _deterministic():
        small = model.downsample(x).clone() if multiscale else x
    stages: list[tuple[PixelRNN, torch.Tensor, torch.Tensor | None, np.ndarray]] = [
        (model.small if multiscale else model, small, None, np.ones(small.shape[2:], dtype=bool))]
    total = small.shape[2] * small.shape[3] + (int(model.open_pixels(*x.shape[2:]).sum()) if multiscale else 0)
    bar = tqdm(total=total * x.shape[1], unit="sub-pixel", disable=not progress, leave=False)
    index = 0
    while index < len(stages):
        net, image, cond, coded = stages[index]
        with _deterministic():
            stepper = CachedStepper(net, image, y, cond)
        channels, height, width = image.shape[1:]
        for r in range(height):
            with _deterministic():
                for j in range(width):
                    if not coded[r, j]:  # a pixel the small image fixed: one pass keeps the stepper's caches whole
                        stepper.logits(image, r, j)
                        continue
                    for c in range(channels):
                        logits = stepper.logits(image, r, j)[0, :, c].double()
                        image[0, c, r, j] = symbol(torch.softmax(logits, 0).numpy(), index, c, r, j)
                    bar.update(channels)
                stepper.end_row(image, r)
            yield index, r, image
        if multiscale and index == 0:  # then the full image given the small one
            x[..., :: model.factor, :: model.factor] = image
            with _deterministic():
                stages.append((model.large, x, model.condition(image), model.open_pixels(*x.shape[2:]).numpy()))
        index += 1
    bar.close()


def _categorical(probs: np.ndarray) -> constriction.stream.model.Categorical:
    # constriction silently misreads non-contiguous arrays: hand it a fresh contiguous float64 copy
    return constriction.stream.model.Categorical(np.ascontiguousarray(probs, dtype=np.float64), perfect=False)


def encode(model: Model, image: torch.Tensor, y: int | None = None, progress: bool = False) -> bytes:
    """image (C, H, W) integer levels -> the .prnn bytes (version 2). y: the class label of a class-conditional
    model."""
    channels, height, width, levels = _shape(model)
    image = torch.as_tensor(image)
    if image.shape != (channels, height, width) or image.is_floating_point():
        raise ValueError(f"image must be integer levels of shape ({channels}, {height}, {width}), "
                         f"got {image.dtype} {tuple(image.shape)}")
    if int(image.min()) < 0 or int(image.max()) >= levels:
        raise ValueError(f"image values must lie in [0, {levels})")
    num_classes = _single(model).num_classes
    if (num_classes is None) != (y is None) or (y is not None and not 0 <= y < num_classes):
        raise ValueError("this model is unconditional: pass y=None" if num_classes is None
                         else f"this model is class-conditional: pass a label y in [0, {num_classes})")
    model.eval()
    truth = image.long().cpu()
    x = torch.zeros(1, channels, height, width, dtype=torch.long)
    labels = None if y is None else torch.tensor([y])
    encoder = constriction.stream.queue.RangeEncoder()

    factor = model.factor if isinstance(model, MultiScalePixelRNN) else 1

    def symbol(probs: np.ndarray, stage: int, c: int, r: int, j: int) -> int:
        value = int(truth[c, r * factor, j * factor] if stage == 0 else truth[c, r, j])  # stage 0: the small image
        encoder.encode(value, _categorical(probs))
        return value

    for _ in _code(model, x, labels, symbol, progress):
        pass
    payload = encoder.get_compressed().tobytes().rstrip(b"\0")  # zero bytes at the end are implied
    crc = zlib.crc32(truth.to(torch.int32).numpy().tobytes()) & 0xFFFF
    label = _varint(0 if y is None else y + 1)
    return bytes([FORMAT_V2]) + weights_hash(model)[:HASH_BYTES] + label + crc.to_bytes(2, "little") + payload


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, the high bit set on all but the last."""
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _read_varint(data: bytes, start: int, max_bytes: int = 3) -> tuple[int, int]:
    """-> (value, index after it); CompressionError if it runs past the data or `max_bytes`."""
    value = 0
    for k in range(max_bytes):
        if start + k >= len(data):
            break
        value |= (data[start + k] & 0x7F) << (7 * k)
        if not data[start + k] & 0x80:
            return value, start + k + 1
    raise CompressionError("the file is truncated or its header is corrupted (the class label does not end)")


def read_header(data: bytes) -> dict:
    """The header of a .prnn stream (version 2 or 1), checked for format and size; nothing is allocated by what
    a header announces. -> name ("" in version 2), hash (4 or 8 bytes), label (None: none), shape, levels and
    factor (version 1 only, else None), payload (the coder's bytes), crc and crc_bits."""
    if not data:
        raise CompressionError("the file is empty")
    if data[0] == FORMAT_V2:
        if len(data) < 1 + HASH_BYTES + 3:
            raise CompressionError(f"the file is truncated ({len(data)} bytes, shorter than a header)")
        label, end = _read_varint(data, 1 + HASH_BYTES)
        if end + 2 > len(data):
            raise CompressionError(f"the file is truncated ({len(data)} bytes, shorter than its header)")
        return {"version": 2, "name": "", "hash": data[1 : 1 + HASH_BYTES], "label": None if label == 0 else label - 1,
                "shape": None, "levels": None, "factor": None, "payload": data[end + 2 :],
                "crc": int.from_bytes(data[end : end + 2], "little"), "crc_bits": 16}
    if data[:4] != MAGIC_V1 or len(data) < V1_HEADER.size:
        raise CompressionError("not a PixelRNN compressed file (.prnn): wrong magic bytes")
    _, version, name_len, digest, c, h, w, levels, label, factor, payload, crc = V1_HEADER.unpack_from(data)
    if version != 1:
        raise CompressionError(f"unsupported .prnn format version {version} (this reader knows 1 and 2)")
    body = data[V1_HEADER.size + name_len :]
    if len(data) < V1_HEADER.size + name_len or len(body) > payload or payload % 4:
        raise CompressionError(f"the file is truncated or has trailing bytes ({len(data)} bytes; the header "
                               f"announces {V1_HEADER.size + name_len} + up to {payload})")
    if payload - len(body) > MAX_V1_ZERO_BYTES:
        raise CompressionError(f"the header announces {payload:,} payload bytes, the file holds {len(body):,}: "
                               f"it is truncated or its header is corrupted")
    name = data[V1_HEADER.size : V1_HEADER.size + name_len].decode(errors="replace")
    return {"version": 1, "name": name, "hash": digest, "label": None if label < 0 else label, "shape": (c, h, w),
            "levels": levels, "factor": factor, "payload": body, "crc": crc, "crc_bits": 32}


def written_by(header: dict, model: Model) -> bool:
    """Whether the stream's header names this model (its weight hash)."""
    return weights_hash(model)[: len(header["hash"])] == header["hash"]


def decode_rows(model: Model, data: bytes, progress: bool = False) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Decode row by row: yields (stage, row, image (1, C, h, w) so far), stage 0 being a Multi-Scale model's
    small image. The pixels are unverified until the generator ends: it raises CompressionError then if they
    fail their checksum (and at once for a bad header)."""
    header = read_header(data)
    if not written_by(header, model):
        raise CompressionError(f"this file was written with another model ({header['name'] or 'weights'} "
                               f"{header['hash'].hex()}); decode it with that model")
    channels, height, width, levels = _shape(model)
    if header["version"] == 1 and (header["shape"] != (channels, height, width) or header["levels"] != levels
                                   or header["factor"] != getattr(model, "factor", 0)):
        raise CompressionError("the header's shape, levels or multi-scale factor do not match the model")
    label, num_classes = header["label"], _single(model).num_classes
    if (label is None) != (num_classes is None) or (label is not None and label >= num_classes):
        raise CompressionError("the header's label does not fit the model")
    labels = None if label is None else torch.tensor([label])
    model.eval()
    payload = header["payload"]  # at most the upload's size; the coder reads bytes left out as zeros
    words = np.frombuffer(payload.ljust(-(-len(payload) // 4) * 4, b"\0"), dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    x = torch.zeros(1, channels, height, width, dtype=torch.long)

    def symbol(probs: np.ndarray, stage: int, c: int, r: int, j: int) -> int:
        try:
            return int(decoder.decode(_categorical(probs)))
        except (ValueError, RuntimeError, IndexError) as error:  # the coder ran out of (or choked on) its words
            raise CompressionError(f"the payload is corrupted or truncated ({error})") from None

    yield from _code(model, x, labels, symbol, progress)
    if zlib.crc32(x[0].to(torch.int32).numpy().tobytes()) & ((1 << header["crc_bits"]) - 1) != header["crc"]:
        raise CompressionError("the decoded pixels fail their checksum: the file is corrupted or truncated")
    if not decoder.maybe_exhausted():
        raise CompressionError("the file has trailing bytes after the coded image: it is corrupted")


def decode(model: Model, data: bytes, progress: bool = False) -> tuple[torch.Tensor, int | None]:
    """.prnn bytes -> (image (C, H, W) long, label or None). Raises CompressionError for a bad stream."""
    *_, (_, _, image) = decode_rows(model, data, progress)
    return image[0], read_header(data)["label"]


# ----------------------------------------------------------------------------- files and the CLI


def image_to_levels(path: str | Path, channels: int, height: int, width: int, levels: int) -> torch.Tensor:
    """A PNG (or any lossless picture) of the model's exact size -> (C, H, W) levels, losslessly or not at all."""
    with Image.open(path) as picture:
        picture.load()
        array = np.asarray(picture.convert("L" if channels == 1 else "RGB"))
    if array.shape[:2] != (height, width):
        raise ValueError(f"{Path(path).name}: the model codes {width}x{height} images, this one is "
                         f"{array.shape[1]}x{array.shape[0]}")
    array = array.reshape(height, width, channels).transpose(2, 0, 1)
    if levels == 256:
        return torch.from_numpy(array.astype(np.int64))
    step = 255 / (levels - 1)
    values = np.rint(array / step)
    if not np.array_equal(values * step, array.astype(np.float64)):
        raise ValueError(f"{Path(path).name}: a {levels}-level model codes only images whose pixels are multiples of "
                         f"{step:g} (e.g. black and white for 2 levels); this one has other values")
    return torch.from_numpy(values.astype(np.int64))


def levels_to_image(x: torch.Tensor, levels: int) -> Image.Image:
    array = np.rint(x.numpy().astype(np.float64) * (255 / (levels - 1))).astype(np.uint8).transpose(1, 2, 0)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def baseline_sizes(picture: Image.Image) -> dict[str, int]:
    """Bytes of the same picture as PNG (optimised) and lossless WebP, and JPEG XL where Pillow has it."""
    sizes = {}
    for fmt, options in (("PNG", {"optimize": True}), ("WEBP", {"lossless": True, "quality": 100, "method": 6}),
                         ("JXL", {"lossless": True})):
        buffer = io.BytesIO()
        try:
            picture.save(buffer, fmt, **options)
        except (KeyError, OSError, ValueError):
            continue
        sizes[fmt] = buffer.tell()
    return sizes


def _recorded_nll_bits_per_dim(folder: str) -> float | None:
    try:
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    value = metrics.get("test_bits_per_dim")
    return float(value) if isinstance(value, (int, float)) else None


def _shipped_model_for(header: dict) -> Model:
    """The checkpoint under checkpoints/ whose weights wrote the stream, loaded; CompressionError if none did."""
    from pixelrnn.hub import CHECKPOINTS_DIR, CheckpointError, load

    for folder in sorted(p for p in CHECKPOINTS_DIR.glob("*") if (p / "config.json").is_file()):
        try:
            model = load(folder)
        except CheckpointError:
            continue
        if written_by(header, model):
            return model
    raise CompressionError(f"no checkpoint in {CHECKPOINTS_DIR} has the weights {header['hash'].hex()} that wrote "
                           f"this file: pass --model")


def main(argv: list[str] | None = None) -> int:
    from pixelrnn.hub import load, resolve

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="picture -> .prnn")
    enc.add_argument("model", help="checkpoint name, folder or Hub id")
    enc.add_argument("input", type=Path)
    enc.add_argument("output", type=Path)
    enc.add_argument("--label", type=int, default=None, help="class label (class-conditional models)")
    dec = sub.add_parser("decode", help=".prnn -> PNG")
    dec.add_argument("input", type=Path)
    dec.add_argument("output", type=Path)
    dec.add_argument("--model", help="default: the shipped checkpoint whose weights the file names")
    args = p.parse_args(argv)
    try:
        if args.command == "encode":
            model = load(args.model)
            channels, height, width, levels = _shape(model)
            image = image_to_levels(args.input, channels, height, width, levels)
            start = time.perf_counter()
            data = encode(model, image, args.label, progress=True)
            seconds = time.perf_counter() - start
            args.output.write_bytes(data)
            dims = channels * height * width
            realised = 8 * len(data) / dims
            nll = _recorded_nll_bits_per_dim(str(resolve(args.model)))
            print(f"{args.output}: {len(data)} bytes = {realised:.4f} bits/dim (header included) in {seconds:.2f} s"
                  + (f"; the model's test NLL is {nll:.4f} bits/dim" if nll is not None else ""))
            for fmt, size in baseline_sizes(levels_to_image(image, levels)).items():
                print(f"  {fmt:5s} {size:6d} bytes = {8 * size / dims:.4f} bits/dim")
        else:
            data = args.input.read_bytes()
            header = read_header(data)
            named = args.model or header["name"]
            model = load(named) if named else _shipped_model_for(header)
            start = time.perf_counter()
            image, label = decode(model, data, progress=True)
            levels_to_image(image, _shape(model)[3]).save(args.output)
            print(f"{args.output}: decoded in {time.perf_counter() - start:.2f} s"
                  + (f", label {label}" if label is not None else ""))
    except (ValueError, OSError) as error:  # CompressionError, bad pictures, missing files: one clear line
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

