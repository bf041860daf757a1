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

File layout: header (magic, version, model name and weight hash, shape, levels, label,
multi-scale factor, payload length, CRC-32 of the pixels), then the range coder's words.
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
from pixelrnn.sampling import CachedStepper

MAGIC, VERSION = b"PRNN", 1
# magic, version, name length, first 8 bytes of the weights' SHA-256, C, H, W, levels, label (-1: none),
# multi-scale factor (0: none), the coder's bytes (whole 32-bit words; the file leaves out trailing zero bytes),
# CRC-32 of the pixels: 32 bytes, then the model name, then the coder's bytes
_FIXED = struct.Struct("<4sBB8sBHHHhBII")


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
    """One CPU thread (the float32 sums then run in one fixed order on both sides), no autograd. Both settings
    belong to the calling thread, and a generator may be resumed by another one (Gradio does): enter this
    afresh after every yield."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
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


def encode(model: Model, image: torch.Tensor, y: int | None = None, name: str = "", progress: bool = False) -> bytes:
    """image (C, H, W) integer levels -> the .prnn bytes. y: the class label of a class-conditional model."""
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
    words = encoder.get_compressed().tobytes()
    payload = words.rstrip(b"\0")  # zero bytes at the end are implied: the reader pads back to `len(words)`
    name_bytes = name.encode()[:255]
    crc = zlib.crc32(truth.to(torch.int32).numpy().tobytes())
    header = _FIXED.pack(MAGIC, VERSION, len(name_bytes), weights_hash(model), channels, height, width, levels,
                         -1 if y is None else y, getattr(model, "factor", 0), len(words), crc)
    return header + name_bytes + payload


def read_header(data: bytes) -> dict:
    """The header of a .prnn stream, checked for magic, version and length."""
    if not data:
        raise CompressionError("the file is empty")
    if len(data) < _FIXED.size or data[:4] != MAGIC:
        raise CompressionError("not a PixelRNN compressed file (.prnn): wrong magic bytes")
    _, version, name_len, digest, c, h, w, levels, label, factor, payload, crc = _FIXED.unpack_from(data)
    if version != VERSION:
        raise CompressionError(f"unsupported .prnn format version {version} (this reader knows {VERSION})")
    body = data[_FIXED.size + name_len :]
    if len(data) < _FIXED.size + name_len or len(body) > payload or payload % 4:
        raise CompressionError(f"the file is truncated or has trailing bytes ({len(data)} bytes; the header "
                               f"announces {_FIXED.size + name_len} + up to {payload})")
    name = data[_FIXED.size : _FIXED.size + name_len].decode(errors="replace")
    return {"name": name, "hash": digest, "shape": (c, h, w), "levels": levels, "label": None if label < 0 else label,
            "factor": factor, "payload": body, "words": body.ljust(payload, b"\0"), "crc": crc}


def decode_rows(model: Model, data: bytes, progress: bool = False) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Decode row by row: yields (stage, row, image (1, C, h, w) so far), stage 0 being a Multi-Scale model's
    small image. The pixels are unverified until the generator ends: it raises CompressionError then if they
    fail their checksum (and at once for a bad header)."""
    header = read_header(data)
    if header["hash"] != weights_hash(model):
        raise CompressionError(f"this file was written with another model ({header['name'] or 'unnamed'}, weights "
                               f"{header['hash'].hex()[:12]}); decode it with that model")
    channels, height, width, levels = _shape(model)
    if header["shape"] != (channels, height, width) or header["levels"] != levels:
        raise CompressionError("the header's shape or levels do not match the model")
    label, num_classes = header["label"], _single(model).num_classes
    if (label is None) != (num_classes is None) or (label is not None and label >= num_classes):
        raise CompressionError("the header's label does not fit the model")
    labels = None if label is None else torch.tensor([label])
    model.eval()
    words = np.frombuffer(header["words"], dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    x = torch.zeros(1, channels, height, width, dtype=torch.long)

    def symbol(probs: np.ndarray, stage: int, c: int, r: int, j: int) -> int:
        try:
            return int(decoder.decode(_categorical(probs)))
        except (ValueError, RuntimeError, IndexError) as error:  # the coder ran out of (or choked on) its words
            raise CompressionError(f"the payload is corrupted or truncated ({error})") from None

    yield from _code(model, x, labels, symbol, progress)
    if zlib.crc32(x[0].to(torch.int32).numpy().tobytes()) != header["crc"]:
        raise CompressionError("the decoded pixels fail their checksum: the file is corrupted or truncated")


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
    dec.add_argument("--model", help="default: the model named in the file")
    args = p.parse_args(argv)
    try:
        if args.command == "encode":
            model = load(args.model)
            channels, height, width, levels = _shape(model)
            image = image_to_levels(args.input, channels, height, width, levels)
            start = time.perf_counter()
            data = encode(model, image, args.label, name=args.model, progress=True)
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
            model = load(args.model or header["name"])
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

