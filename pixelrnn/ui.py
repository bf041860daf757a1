"""UI logic of PixelRNN Studio, the Gradio demo (app.py holds only the wiring).

Everything here is a plain function or a small class that can be tested without a server:
decoding and validating uploads, converting them to a model's format, extracting a painted
mask, rendering frames, distributions and heat maps, mapping clicks to pixels, throttling
streamed frames, the model registry, and `Studio`, whose methods are the app's endpoints.
User mistakes raise `gr.Error` with a sentence meant for a person.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import inspect
import io
import logging
import math
import numbers
import os
import re
import secrets
import stat
import struct
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import gradio.utils as gradio_utils
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

import pixelrnn
from pixelrnn import compress
from pixelrnn.data import CIFAR10_CLASSES, MNIST_CLASSES
from pixelrnn.hub import (
    ARCH_NAMES,
    DATASET_INFO,
    LEARNING_CURVE,
    METRICS,
    PAPER_RESULTS,
    SAMPLES,
    WEIGHTS,
    as_number,
    check_folder,
    format_duration,
    load_folder,
    pickle_weights,
    read_config,
    read_json,
    resolve,
)
from pixelrnn.images import tile, to_rgb, upscale
from pixelrnn.model import Model, MultiScalePixelRNN

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "assets"
MAX_SAMPLES = 16  # Generate: images per request
MAX_COMPLETIONS = 8  # Complete: completions per request
MAX_PARTICLES = 16  # Complete: SMC particles per completion
MAX_TEMPERATURE = 10.0
# Sampling work of a request, in pixel samples: images (x particles) x pixels x channels. The costliest model here
# (CIFAR-10 PixelCNN, 256 levels) needs ~0.08 ms of one CPU core per pixel sample at batch 128, plus ~1 ms per pixel.
SAMPLING_SLOTS = 3  # concurrent Generate/Complete requests (app.py)
LONG_WORK = 100_000  # above this a request is "long": one at a time, so one long job cannot starve short ones
MAX_WORK = 400_000  # above this a request is refused (the largest settings on a 32x32 RGB model need 393,216)
MAX_PACE_S = 20.0  # longest requested animation
MAX_UPLOAD_BYTES = 20 * 2**20  # largest upload read (app.py gives Gradio the same limit)
MAX_UPLOAD_PIXELS = 25_000_000  # 5000 x 5000: larger uploads are refused before decoding
MIN_SIDE = 4  # smallest accepted upload side, in pixels
RETRY_AFTER_S = 120.0  # a model that failed to load is tried again after this long (at once if its weights change)
LOAD_WAIT_S = 20.0  # a request waits this long for a model being loaded (a Hub download goes on in the background)
FRAME_INTERVAL_S = 1 / 20  # streamed frames: at most 20 updates per second
CELL_PX = 168  # displayed size of one image (upscaled by an integer factor, nearest neighbour)
INSPECT_PX = 224  # displayed size of the Inspect tab's image and maps
PENDING_RGB = (128, 128, 140)  # pixels not sampled yet
MASK_RGB = np.array([255, 40, 40])  # tint of the region to regenerate
CURSOR_RGB = (255, 40, 40)
CHANNEL_RGB = {1: [(90, 90, 90)], 3: [(214, 48, 49), (39, 174, 96), (41, 98, 255)]}
MARK_RGB = (245, 130, 0)
MODES = ("plain", "context-aware (SMC)")
AUTO_CLASS = "auto (most likely)"
PROGRESS = gr.Progress()  # the default that makes Gradio pass a progress tracker
# viridis at 9 evenly spaced points, interpolated linearly
VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141), (39, 173, 129),
                    (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float64)


# --- memory ----------------------------------------------------------------------------------------------

try:  # glibc keeps freed heap memory in its arenas; malloc_trim gives it back to the system
    _malloc_trim: Callable[[int], int] | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


def release_memory() -> None:
    """Return the memory a large job freed to the system (after a maximum completion RSS stayed ~60 MB higher
    without this). A no-op without glibc."""
    if _malloc_trim is not None:
        _malloc_trim(0)


# --- errors ---------------------------------------------------------------------------------------

_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"`:;,()\[\]{}]+)+/?")


def redact_paths(text: str) -> str:
    """A message for users without server paths: every absolute path is cut to its last part
    ("/srv/app/checkpoints/x/model.safetensors: ..." -> "model.safetensors: ..."); URLs are kept."""
    return _ABSOLUTE_PATH.sub(lambda match: Path(match.group()).name or "/", text)


def user_errors(fn: Callable) -> Callable:
    """Turn a ValueError (e.g. from the library's argument checks) into gr.Error, and log anything unexpected,
    so that every failure reaches the user as a sentence. Works for functions and generator functions."""

    def convert(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if isinstance(err, ValueError):
            return gr.Error(redact_paths(str(err)))
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"Something went wrong ({type(err).__name__}: {redact_paths(str(err))}). Please try again "
                        f"or report it.")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise convert(err) from err
        return generator

    @functools.wraps(fn)
    def function(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise convert(err) from err
    return function


# --- decoding uploads -------------------------------------------------------------------------------

def _file_path(source: Any) -> str | None:
    """The file path named by an upload: a path, or a Gradio FileData dict/object (None if it names none)."""
    if isinstance(source, (str, Path)):
        path = str(source)
    elif isinstance(source, dict):
        path = source.get("path")
    else:
        path = getattr(source, "path", None)
    return path if isinstance(path, str) and path else None


def upload_folders() -> tuple[Path, ...]:
    """The folders an uploaded file may be read from: Gradio's upload cache (GRADIO_TEMP_DIR, read at call time as
    Gradio does) and the examples in assets/ (the app's only allowed path)."""
    return Path(gradio_utils.get_upload_folder()).resolve(), ASSETS_DIR.resolve()


def read_upload(path: str, what: str) -> bytes:
    """The bytes of an uploaded file, read only if it is a regular file of at most MAX_UPLOAD_BYTES inside
    `upload_folders()`.

    With preprocess=False a client names any path it likes, so every other case (outside those folders, missing,
    a directory, a FIFO or device, unreadable) gets one message that reveals nothing about the server's files.
    The file is stat'ed before it is opened, opened non-blocking, and checked again once open.
    """
    unreadable = gr.Error(f"The uploaded {what} cannot be read: upload it again.")
    too_large = gr.Error(f"The uploaded {what} is larger than {MAX_UPLOAD_BYTES // 2**20} MB: upload a smaller file.")
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):  # e.g. an embedded NUL
        raise unreadable from None
    if not any(real.is_relative_to(folder) for folder in upload_folders()):
        raise unreadable
    try:
        before = os.stat(real)
        if not stat.S_ISREG(before.st_mode):
            raise unreadable
        if before.st_size > MAX_UPLOAD_BYTES:
            raise too_large
        with os.fdopen(os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW), "rb") as file:
            opened = os.fstat(file.fileno())  # the same regular file, not one swapped in since the stat
            if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(opened.st_mode):
                raise unreadable
            data = file.read(MAX_UPLOAD_BYTES + 1)
    except OSError:
        raise unreadable from None
    if len(data) > MAX_UPLOAD_BYTES:
        raise too_large
    return data


def open_image(source: Any, what: str = "image") -> Image.Image:
    """Decode an uploaded image (path, FileData dict, PIL image or numpy array), fully, with size checks.

    A path is read only from Gradio's upload cache or the examples (`read_upload`). Raises gr.Error for a missing,
    unreadable, truncated, too large or too small image.
    """
    if source is None:
        raise gr.Error(f"No {what}: upload one or pick an example.")
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        array = source
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        try:
            image = Image.fromarray(array)
        except (TypeError, ValueError) as err:
            raise gr.Error(f"The {what} array (shape {array.shape}, {array.dtype}) is not an image.") from err
    else:
        path = _file_path(source)
        if not path:
            raise gr.Error(f"No {what}: upload one or pick an example.")
        image = decode_image(read_upload(path, what), what)
    width, height = image.size
    if width * height > MAX_UPLOAD_PIXELS:
        raise gr.Error(f"The {what} is {width}x{height} pixels, too large: upload one of at most "
                       f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels.")
    if min(width, height) < MIN_SIDE:
        raise gr.Error(f"The {what} is only {width}x{height} pixels: upload one at least {MIN_SIDE}x{MIN_SIDE}.")
    return image


def decode_image(data: bytes, what: str) -> Image.Image:
    """Decode image file bytes (the first frame, EXIF rotation applied); a bomb is refused from its header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size  # from the header: refuse a bomb before decoding it
                if width * height > MAX_UPLOAD_PIXELS:
                    raise gr.Error(f"The {what} is {width}x{height} pixels, too large: upload one of at most "
                                   f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels.")
                image.seek(0)  # first frame of an animation
                image.load()
                try:
                    image = ImageOps.exif_transpose(image)
                except Exception as err:  # noqa: BLE001 - a broken EXIF tag only loses the rotation
                    log.debug("EXIF transpose failed: %s", err)
                return image.copy()
    except gr.Error:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise gr.Error(f"The {what} is too large to decode safely (a decompression bomb?): upload one of at most "
                       f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels.") from err
    except UnidentifiedImageError as err:
        raise gr.Error(f"The uploaded file is not an image this app can read: use a PNG, JPEG, GIF, BMP or WebP "
                       f"{what}.") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise gr.Error(f"The {what} could not be decoded (truncated or corrupt file): {err}") from err


def to_8bit(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Any PIL mode -> 8-bit "L" or "RGB", transparency composited over black -> (image, notes)."""
    notes = []
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) if array.size else 0.0
        if mode == "F":
            scale = 255.0 if top <= 1.0 else (255.0 / top if top > 255 else 1.0)
        else:
            scale = 1 / 257 if (mode.startswith("I;16") or 255 < top <= 65535) else (255.0 / top if top > 255 else 1.0)
        image = Image.fromarray(np.clip(np.rint(array * scale), 0, 255).astype(np.uint8), "L")
        notes.append(f"{mode} image reduced to 8 bits")
        return image, notes
    if mode == "1":
        return image.convert("L"), notes
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    elif mode in ("PA", "RGBa", "La"):
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image, mode = image.convert("RGB"), "RGB"
    if mode in ("LA", "RGBA"):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if (alpha < 255).any():
            notes.append("transparent areas filled with black")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba).convert("L" if mode == "LA" else "RGB")
    return image, notes


def center_crop_box(width: int, height: int, target_h: int, target_w: int) -> tuple[int, int, int, int]:
    """The largest centred box of the target aspect ratio inside a width x height image (left, top, right, bottom)."""
    if width * target_h > height * target_w:  # too wide
        crop_w = max(1, round(height * target_w / target_h))
        left = (width - crop_w) // 2
        return left, 0, left + crop_w, height
    crop_h = max(1, round(width * target_h / target_w))
    top = (height - crop_h) // 2
    return 0, top, width, top + crop_h


def quantize(array: np.ndarray, levels: int) -> np.ndarray:
    """8-bit values -> integer levels in [0, levels): 2 levels threshold at 128, 256 levels keep the value."""
    array = np.asarray(array, dtype=np.int64)
    if levels == 2:
        return (array >= 128).astype(np.int64)
    return array * levels // 256


@dataclass(frozen=True)
class ModelSpec:
    """What the UI needs to know about a model: its image format and classes."""

    arch: str
    channels: int
    levels: int
    height: int
    width: int
    num_classes: int | None = None
    factor: int | None = None  # Multi-Scale PixelRNN: the small image is (H/factor, W/factor)
    class_names: tuple[str, ...] = ()

    @property
    def fmt(self) -> tuple[int, int, int, int]:
        """(channels, levels, height, width): models with the same fmt score the same images."""
        return self.channels, self.levels, self.height, self.width

    def describe(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}, {self.levels} levels"


@dataclass
class PreparedImage:
    """An upload converted to a model's format."""

    pixels: np.ndarray  # (C, H, W) int64 levels
    source_size: tuple[int, int]  # (width, height) of the upload
    crop_box: tuple[int, int, int, int]  # region of the upload that was used
    notes: list[str] = field(default_factory=list)

    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.pixels)


def prepare_image(source: Any, spec: ModelSpec, invert: str = "auto") -> PreparedImage:
    """Decode an upload and convert it to the model's format: channels (L or RGB), centre-cropped to the
    model's aspect ratio, resized (box filter) to H x W, quantized to its levels.

    invert: "auto" inverts single-channel images with a light border (dark strokes on white paper),
    because MNIST digits are light on dark; "yes" / "no" force it.
    """
    if spec.channels not in (1, 3):
        raise gr.Error(f"This app shows 1- or 3-channel models only; this one has {spec.channels} channels.")
    image = open_image(source)
    width, height = image.size
    image, notes = to_8bit(image)
    if image.mode == "RGB" and spec.channels == 1:
        rgb = np.asarray(image)
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            notes.append("colour converted to grayscale")
    elif image.mode == "L" and spec.channels == 3:
        notes.append("grayscale copied to R, G and B")
    image = image.convert("L" if spec.channels == 1 else "RGB")
    box = center_crop_box(width, height, spec.height, spec.width)
    if box != (0, 0, width, height):
        notes.append(f"centre-cropped {width}x{height} to {box[2] - box[0]}x{box[3] - box[1]}")
    if (box[2] - box[0], box[3] - box[1]) != (spec.width, spec.height):
        notes.append(f"resized to {spec.width}x{spec.height}")
    image = image.resize((spec.width, spec.height), Image.Resampling.BOX, box=box)
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if spec.channels == 1 and invert != "no":
        border = np.concatenate([array[0, 0], array[0, -1], array[0, :, 0], array[0, :, -1]])
        if invert == "yes" or (invert == "auto" and border.mean() > 127):
            array = 255 - array
            notes.append("inverted (MNIST digits are light on dark)")
    if spec.levels == 2:
        notes.append("binarized at 128")
    elif spec.levels != 256:
        notes.append(f"quantized to {spec.levels} levels")
    return PreparedImage(quantize(array, spec.levels), (width, height), box, notes)


# --- masks ---------------------------------------------------------------------------------------------

def layer_painted(source: Any) -> np.ndarray:
    """A brush layer -> (h, w) bool, True where painted: alpha > 0, or any non-zero value without alpha."""
    image = open_image(source, "mask layer")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        return np.asarray(image.convert("RGBA"))[..., 3] > 0
    image, _ = to_8bit(image)
    array = np.asarray(image)
    return array > 0 if array.ndim == 2 else (array > 0).any(axis=2)


def pool_any(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) bool -> (height, width) bool: a cell is True if any source pixel it covers is True."""
    def edges(n_in: int, n_out: int) -> list[tuple[int, int]]:
        return [(math.floor(i * n_in / n_out), max(math.floor(i * n_in / n_out) + 1, math.ceil((i + 1) * n_in / n_out)))
                for i in range(n_out)]

    rows = np.stack([mask[a:b].any(axis=0) for a, b in edges(mask.shape[0], height)])
    return np.stack([rows[:, a:b].any(axis=1) for a, b in edges(mask.shape[1], width)], axis=1)


def extract_mask(layers: Iterable[Any], prepared: PreparedImage, height: int, width: int) -> np.ndarray:
    """Painted brush layers -> (height, width) bool mask in model pixels, True = regenerate.

    Layers are aligned with the background (resized to its size if they differ), cropped like the image,
    and a model pixel is masked if any painted pixel falls inside it.
    """
    source_w, source_h = prepared.source_size
    union = np.zeros((source_h, source_w), dtype=bool)
    for layer in layers or []:
        if layer is None:
            continue
        painted = layer_painted(layer)
        if painted.shape != union.shape:
            painted = np.asarray(Image.fromarray(painted).resize((source_w, source_h), Image.Resampling.NEAREST))
        union |= painted
    left, top, right, bottom = prepared.crop_box
    return pool_any(union[top:bottom, left:right], height, width)


def editor_parts(editor: Any) -> tuple[Any, list[Any]]:
    """An ImageEditor value (dict, or EditorValue-like object) -> (background, layers)."""
    if editor is None:
        raise gr.Error("No image: upload one (or pick an example) and paint the region to regenerate.")
    if isinstance(editor, dict):
        background, layers, composite = editor.get("background"), editor.get("layers") or [], editor.get("composite")
    else:
        background, layers = getattr(editor, "background", None), getattr(editor, "layers", None) or []
        composite = getattr(editor, "composite", None)
    if background is None and composite is None:
        raise gr.Error("No image: upload one (or pick an example) and paint the region to regenerate.")
    if background is None:
        background = composite  # a canvas drawn from scratch
    return background, list(layers)


# --- argument parsing --------------------------------------------------------------------------------

MAX_NUMBER_CHARS = 40  # longer text is not a number a person typed


def _shown(value: Any) -> str:
    """repr(value) for an error message, cut short (a 400-digit number would drown the sentence)."""
    text = repr(value)
    return text if len(text) <= MAX_NUMBER_CHARS else text[: MAX_NUMBER_CHARS - 1] + "…"


def _number(value: Any) -> int | float | None:
    """A number, or the text of one -> an exact int (any size) or a float (possibly inf or nan); None otherwise.

    Booleans are not numbers here, and text longer than MAX_NUMBER_CHARS is refused before it is parsed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str) and len(value.strip()) <= MAX_NUMBER_CHARS:
        text = value.strip()
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return None


def _whole(value: Any) -> int | None:
    """A whole number (an int, an integral float or the text of one) -> int; None for anything else (inf, nan)."""
    number = _number(value)
    if isinstance(number, float) and number.is_integer():  # False for inf and nan
        return int(number)
    return number if isinstance(number, int) else None


def _real(value: Any) -> float:
    """A number (or its text) -> float: a huge int becomes inf, anything else that is not a number nan."""
    number = _number(value)
    if number is None:
        return math.nan
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def parse_int(value: Any, name: str, low: int, high: int) -> int:
    """A whole number in [low, high], or gr.Error naming the allowed range (inf, nan and huge values included)."""
    number = _whole(value)
    if number is None or not low <= number <= high:
        raise gr.Error(f"{name} must be a whole number from {low} to {high} (got {_shown(value)}).")
    return number


def parse_temperature(value: Any) -> float:
    number = _real(value)
    if not (math.isfinite(number) and 0 < number <= MAX_TEMPERATURE):
        raise gr.Error(f"Temperature must be a number above 0 and at most {MAX_TEMPERATURE:g} (got {_shown(value)}): "
                       f"1 samples the model as trained, lower is more conservative, higher more random.")
    return number


def parse_seed(value: Any) -> int:
    """A seed in [0, 2**32); None, "" or -1 -> a random one."""
    if value is None or (isinstance(value, str) and not value.strip()) or _whole(value) == -1:
        return secrets.randbelow(2**32)
    return parse_int(value, "Seed", 0, 2**32 - 1)


def parse_pace(value: Any) -> float:
    number = 0.0 if value is None else _real(value)
    if not (math.isfinite(number) and 0 <= number <= MAX_PACE_S):
        raise gr.Error(f"Animation length must be from 0 to {MAX_PACE_S:g} seconds (got {_shown(value)}).")
    return number


def parse_mode(value: Any) -> bool:
    """Completion mode -> True for context-aware (SMC)."""
    text = str(value or "plain").strip().lower()
    if text == "plain":
        return False
    if text in ("smc", "context-aware", MODES[1].lower()):
        return True
    raise gr.Error(f"Completion mode must be {MODES[0]!r} or {MODES[1]!r} (got {value!r}).")


def parse_class(value: Any, spec: ModelSpec, allow_auto: bool = False) -> int | None:
    """A class name or index -> index; None for unconditional models (and for "auto" when allowed)."""
    if spec.num_classes is None:
        return None
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto", AUTO_CLASS)):
        if allow_auto:
            return None
        raise gr.Error(f"This model is class-conditional: choose a class ({', '.join(spec.class_names[:10])}).")
    text = str(value).strip()
    if text in spec.class_names:
        return spec.class_names.index(text)
    if _number(value) is None:
        raise gr.Error(f"Unknown class {_shown(value)}: choose one of {', '.join(spec.class_names)}.")
    index = _whole(value)  # None for inf, nan and fractions
    if index is None or not 0 <= index < spec.num_classes:
        raise gr.Error(f"Class {_shown(value)} is out of range: this model has classes 0 to {spec.num_classes - 1} "
                       f"({', '.join(spec.class_names)}).")
    return index


# --- rendering -------------------------------------------------------------------------------------------

def display_scale(height: int, width: int, cell_px: int = CELL_PX) -> int:
    """Integer upscaling factor that shows an image at about `cell_px` pixels."""
    return max(1, cell_px // max(height, width))


def grid_scale(height: int, width: int, n: int) -> int:
    """Upscaling factor for a grid of n images: larger cells when there are few."""
    return display_scale(height, width, 280 if n == 1 else 224 if n <= 4 else CELL_PX if n <= 9 else 140)


def inspect_scale(height: int, width: int) -> int:
    """Upscaling factor of the Inspect tab's images (clicks on them are mapped back with it)."""
    return display_scale(height, width, INSPECT_PX)


def draw_cursor(cell: np.ndarray, position: tuple[int, int], scale: int) -> None:
    """Outline pixel `position` (row, col) of an upscaled cell in place."""
    r, c = position
    top, left = r * scale, c * scale
    bottom, right = top + scale - 1, left + scale - 1
    thick = 1 if scale < 6 else 2
    cell[top : top + thick, left : right + 1] = CURSOR_RGB
    cell[bottom - thick + 1 : bottom + 1, left : right + 1] = CURSOR_RGB
    cell[top : bottom + 1, left : left + thick] = CURSOR_RGB
    cell[top : bottom + 1, right - thick + 1 : right + 1] = CURSOR_RGB


def render_images(pixels: np.ndarray, levels: int, scale: int, pending: np.ndarray | None = None,
                  cursor: tuple[int, int] | None = None) -> list[np.ndarray]:
    """(n, C, H, W) levels -> n upscaled (h, w, 3) cells; pending pixels grey, the cursor pixel outlined."""
    rgb = to_rgb(pixels, levels).copy()
    if pending is not None:
        rgb[:, pending] = PENDING_RGB
    cells = [upscale(image, scale) for image in rgb]
    if cursor is not None:
        for cell in cells:
            draw_cursor(cell, cursor, scale)
    return cells


def masked_original(pixels: np.ndarray, levels: int, mask: np.ndarray, scale: int) -> np.ndarray:
    """The original (C, H, W) with the region to regenerate tinted red, upscaled."""
    rgb = to_rgb(pixels, levels).astype(np.float64)
    rgb[mask] = 0.45 * rgb[mask] + 0.55 * MASK_RGB
    return upscale(rgb.round().astype(np.uint8), scale)


@functools.lru_cache(maxsize=8)
def font(size: int = 13) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def render_distribution(probs: np.ndarray, marked: Iterable[int] | None = None, title: str = "",
                        width: int = 600, panel_height: int = 86) -> np.ndarray:
    """Bar chart of a pixel's predictive distributions, one panel per channel.

    probs: (levels, C) probabilities; marked: one value per channel (the sampled or true value), drawn in
    orange with its probability. Few levels use a 0..1 axis; many levels are scaled to the largest bar.
    """
    probs = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0).clip(0, 1)
    levels, channels = probs.shape
    marked = list(marked) if marked is not None else [None] * channels
    names = ["value"] if channels == 1 else ["R", "G", "B"][:channels] + [f"c{k}" for k in range(3, channels)]
    colours = CHANNEL_RGB.get(channels, CHANNEL_RGB[1] * channels)
    title_h = 22 if title else 4
    left, right, axis_h = 34, 10, 16
    image = Image.new("RGB", (width, title_h + channels * panel_height), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((6, 4), title, fill=(30, 30, 30), font=font(13))
    plot_w = width - left - right
    for c in range(channels):
        top = title_h + c * panel_height + 14
        bottom = title_h + (c + 1) * panel_height - axis_h
        p = probs[:, c]
        y_max = 1.0 if levels <= 16 else max(float(p.max()), 1e-6) * 1.1
        draw.line([(left, bottom), (left + plot_w, bottom)], fill=(120, 120, 120))
        draw.text((2, top - 6), f"{y_max:.2g}" if y_max < 1 else "1", fill=(110, 110, 110), font=font(10))
        draw.text((2, bottom - 10), "0", fill=(110, 110, 110), font=font(10))
        bar_w = plot_w / levels
        value = marked[c] if c < len(marked) else None
        for v in range(levels):
            height = (bottom - top) * min(p[v] / y_max, 1.0)
            x0, x1 = left + v * bar_w, left + (v + 1) * bar_w - (1 if bar_w >= 4 else 0)
            colour = MARK_RGB if v == value else colours[min(c, len(colours) - 1)]
            if height >= 0.5:
                draw.rectangle([x0, bottom - height, max(x0, x1 - 0.01), bottom], fill=colour)
        if levels <= 16:
            for v in range(levels):
                draw.text((left + (v + 0.5) * bar_w - 3, bottom + 2), str(v), fill=(90, 90, 90), font=font(10))
                if bar_w >= 40:
                    text = f"{p[v]:.3f}"
                    height = (bottom - top) * min(p[v] / y_max, 1.0)
                    y_text = bottom - height + 2 if height > 16 else bottom - height - 13
                    draw.text((left + (v + 0.5) * bar_w - draw.textlength(text, font=font(11)) / 2, y_text), text,
                              fill=(255, 255, 255) if height > 16 else (40, 40, 40), font=font(11))
        else:
            for v in (0, levels // 2, levels - 1):
                draw.text((left + (v + 0.5) * bar_w - 6, bottom + 2), str(v), fill=(90, 90, 90), font=font(10))
        label = f"{names[c]}: most likely {int(p.argmax())} (p={p.max():.3f})"
        if value is not None:
            vx = left + (value + 0.5) * bar_w
            draw.polygon([(vx, bottom + 1), (vx - 5, bottom + 9), (vx + 5, bottom + 9)], fill=MARK_RGB)
            label += f" · marked {value} (p={p[value]:.3f})"
        draw.text((left, top - 13), label, fill=(40, 40, 40), font=font(11))
    return np.asarray(image)


def colormap(values: np.ndarray, vmax: float) -> np.ndarray:
    """Values in [0, vmax] -> (..., 3) uint8 viridis colours."""
    t = np.clip(np.nan_to_num(values / vmax if vmax > 0 else np.zeros_like(values)), 0, 1) * (len(VIRIDIS) - 1)
    low = np.floor(t).astype(int).clip(0, len(VIRIDIS) - 2)
    frac = (t - low)[..., None]
    return np.rint(VIRIDIS[low] * (1 - frac) + VIRIDIS[low + 1] * frac).astype(np.uint8)


LEGEND_PX = 34


def render_heatmap(values: np.ndarray, scale: int, label: str, vmax: float | None = None) -> np.ndarray:
    """(H, W) values -> upscaled viridis map with a colour bar legend (LEGEND_PX high) underneath."""
    values = np.asarray(values, dtype=np.float64)
    top = float(values.max()) if vmax is None else vmax
    top = top if top > 0 else 1.0
    body = upscale(colormap(values, top), scale)
    w = body.shape[1]
    legend = Image.new("RGB", (w, LEGEND_PX), "white")
    bar = colormap(np.linspace(0, top, max(w - 16, 2))[None].repeat(8, 0), top)
    legend.paste(Image.fromarray(bar), (8, 4))
    draw = ImageDraw.Draw(legend)
    draw.text((8, 14), "0", fill=(60, 60, 60), font=font(11))
    right = f"{top:.3g}"
    draw.text((w - 8 - draw.textlength(right, font=font(11)), 14), right, fill=(60, 60, 60), font=font(11))
    draw.text(((w - draw.textlength(label, font=font(11))) / 2, 14), label, fill=(60, 60, 60), font=font(11))
    return np.concatenate([body, np.asarray(legend)], axis=0)


def click_to_pixel(index: Any, height: int, width: int, scale: int) -> tuple[int, int] | None:
    """A click at displayed-image coordinates [x, y] -> model pixel (row, col), or None outside the image."""
    try:
        x, y = (float(v) for v in index)
    except (TypeError, ValueError):
        return None
    row, col = math.floor(y / scale), math.floor(x / scale)
    if 0 <= row < height and 0 <= col < width:
        return row, col
    return None


# --- streaming -------------------------------------------------------------------------------------------

class FrameGate:
    """Which streamed frames to send: the final one, and otherwise at most one per `interval` seconds, or
    fewer when frames are costly (rendering + sending a frame may take at most 1 / (1 + headroom) of the
    time, so a busy machine spends it on sampling); never the same value twice for an output (the browser
    breaks on a repeated image file): `fresh` gives gr.skip()."""

    def __init__(self, interval: float = FRAME_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 headroom: float = 2.0):
        self.interval, self.clock, self.headroom = interval, clock, headroom
        self.last: float | None = None
        self.cost = 0.0  # smoothed seconds per frame
        self.sent: dict[str, bytes] = {}

    def due(self, final: bool = False) -> bool:
        now = self.clock()
        if final or self.last is None or now - self.last >= max(self.interval, self.headroom * self.cost):
            self.last = now
            return True
        return False

    def spent(self, seconds: float) -> None:
        """Record what the last frame cost (rendering, and Gradio's work until the generator resumed)."""
        self.cost = seconds if self.cost == 0 else 0.7 * self.cost + 0.3 * seconds

    def fresh(self, key: str, value: Any) -> Any:
        """`value`, or gr.skip() if it equals what was last sent for `key`."""
        if isinstance(value, np.ndarray):
            digest = hashlib.blake2b(value.tobytes() + str(value.shape).encode(), digest_size=16).digest()
        else:
            digest = hashlib.blake2b(repr(value).encode(), digest_size=16).digest()
        if self.sent.get(key) == digest:
            return gr.skip()
        self.sent[key] = digest
        return value


class Pacer:
    """Spread `total` steps over at least `seconds` (sleeping when ahead), to make fast sampling watchable."""

    def __init__(self, total: int, seconds: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.total, self.seconds, self.clock, self.sleep = max(total, 1), seconds, clock, sleep
        self.start = clock()

    def wait(self, done: int) -> None:
        if self.seconds > 0:
            ahead = self.start + self.seconds * done / self.total - self.clock()
            if ahead > 0:
                self.sleep(ahead)


def with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """(item, is_last) pairs."""
    iterator = iter(items)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield previous, False
        previous = item
    yield previous, True


# --- model registry ------------------------------------------------------------------------------------

def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def class_names(num_classes: int | None, dataset: str | None) -> tuple[str, ...]:
    if not num_classes:
        return ()
    known = {"cifar10": CIFAR10_CLASSES, "mnist": MNIST_CLASSES}.get(dataset or "")
    return tuple(known) if known and len(known) == num_classes else tuple(str(k) for k in range(num_classes))


def spec_of(model: Model, dataset: str | None = None) -> ModelSpec:
    large = model.large if isinstance(model, MultiScalePixelRNN) else model
    return ModelSpec(large.arch, large.channels, large.levels, large.height, large.width, large.num_classes,
                     model.factor if isinstance(model, MultiScalePixelRNN) else None,
                     class_names(large.num_classes, dataset))


@dataclass
class ModelEntry:
    """A model the app can offer: a local checkpoint folder or a Hub repo id (loaded lazily)."""

    name: str
    source: str  # "local" | "hub"
    location: str  # folder path or Hub repo id
    spec: ModelSpec | None = None  # None for a Hub model until it is loaded, or for an invalid config
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    parameters: int | None = None

    @property
    def weights(self) -> Path | None:
        return Path(self.location) / WEIGHTS if self.source == "local" else None


@dataclass(frozen=True)
class LoadFailure:
    """Why a model could not be loaded, for which version of its weights, and when (time.monotonic())."""

    version: Any
    reason: str  # shown to users: no server paths
    at: float


class Registry:
    """Discovers checkpoints (folders with a config.json under `root`, plus Hub ids) and loads them lazily,
    one cached copy per model (reloaded when a local model.safetensors changes).

    Local folders are validated at discovery without reading tensors (config bounds, the weights' header), so
    a broken checkpoint is listed with its reason and never offered as the default. A failed load is
    remembered and not retried for RETRY_AFTER_S seconds, or until the weights change. Loading, Hub
    downloads included, runs in a background thread and outside the registry's lock, which guards only its
    dictionaries: a request waits at most LOAD_WAIT_S for it, and never for another model's download.
    """

    def __init__(self, root: str | Path | None = None, hub_ids: Iterable[str] = (), device: str | None = None):
        self.root = Path(root) if root else REPO_ROOT / "checkpoints"
        self.device = device or default_device()
        self.entries: dict[str, ModelEntry] = {}
        self._cache: dict[str, tuple[Any, Model]] = {}
        self._failures: dict[str, LoadFailure] = {}
        self._jobs: dict[str, Future] = {}
        self._lock = threading.Lock()
        for folder in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if (folder / "config.json").is_file():
                self.entries[folder.name] = entry = ModelEntry(folder.name, "local", str(folder))
                self._discover(entry)
        for repo_id in hub_ids:
            repo_id = repo_id.strip()
            if repo_id and repo_id not in self.entries:
                self.entries[repo_id] = ModelEntry(repo_id, "hub", repo_id)

    def _discover(self, entry: ModelEntry) -> None:
        """Read a local checkpoint's metadata and validate it (no tensors are read); remember what is wrong."""
        folder = Path(entry.location)
        try:
            cls, entry.config = read_config(folder / "config.json")
            with torch.device("meta"):
                skeleton = cls(**entry.config)
            entry.metrics = read_json(folder / METRICS)
            entry.spec = spec_of(skeleton, entry.metrics.get("dataset"))
            entry.parameters = sum(p.numel() for p in skeleton.parameters())
            if entry.weights.is_file() or pickle_weights(folder):
                check_folder(folder)
        except pixelrnn.CheckpointError as err:
            log.warning("checkpoint %s cannot be loaded: %s", folder, err)
            self._failures[entry.name] = LoadFailure(self._version(entry), redact_paths(str(err)), time.monotonic())

    @classmethod
    def from_env(cls, root: str | Path | None = None, hub_ids: Iterable[str] | None = None,
                 device: str | None = None) -> Registry:
        """Registry of $PIXELRNN_CHECKPOINTS (default checkpoints/) and $PIXELRNN_HUB_MODELS (comma-separated)."""
        root = root or os.environ.get("PIXELRNN_CHECKPOINTS") or None
        if hub_ids is None:
            hub_ids = [s for s in os.environ.get("PIXELRNN_HUB_MODELS", "").split(",") if s.strip()]
        return cls(root, hub_ids, device)

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    @staticmethod
    def _version(entry: ModelEntry) -> Any:
        """What identifies a local model's weights (changes when training writes new ones); None for the Hub or
        when there is no model.safetensors."""
        if entry.weights is None:
            return None
        try:
            info = entry.weights.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def problem(self, name: str) -> str | None:
        """Why a model cannot be used now (its last failure, even once a retry is allowed, while its weights are
        unchanged; or no weights yet), or None if it is loaded or may load."""
        entry = self.entries[name]
        version = self._version(entry)
        with self._lock:
            failure = self._failures.get(name)
        if failure is not None and failure.version == version:
            return failure.reason
        if entry.source == "local" and version is None:
            return "no model.safetensors yet: it may still be training"
        return None

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) for a model dropdown: models that cannot be used now are marked."""
        return [(name if self.problem(name) is None else f"{name} (cannot load)", name) for name in self.entries]

    def default(self, prefer: Iterable[str] = ()) -> str | None:
        """A model to preselect: the first of `prefer` that can be used, else the first that can; never one that
        failed to load or has no weights."""
        ready = [name for name in self.entries if self.problem(name) is None]
        for name in prefer:
            if name in ready:
                return name
        return ready[0] if ready else None

    def entry(self, name: Any) -> ModelEntry:
        if not self.entries:
            raise gr.Error("No models found: put checkpoint folders into the checkpoints folder "
                           "($PIXELRNN_CHECKPOINTS) or set PIXELRNN_HUB_MODELS.")
        if not isinstance(name, str) or name not in self.entries:
            raise gr.Error(f"Unknown model {_shown(name)}: choose one of {', '.join(self.names)}.")
        return self.entries[name]

    def spec(self, name: Any) -> ModelSpec:
        entry = self.entry(name)
        if entry.spec is None:
            self.load(name)
        return entry.spec

    def load(self, name: Any) -> Model:
        """The model, loaded on first use; gr.Error with the reason if it cannot be loaded (remembered), or if a
        download takes longer than LOAD_WAIT_S (it goes on in the background)."""
        entry = self.entry(name)
        version = self._version(entry)
        if entry.source == "local" and version is None and not pickle_weights(entry.location):
            raise gr.Error(f"Model {name!r} has no weights yet: it may still be training.")
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == version:
                return cached[1]
            failure = self._failures.get(name)
            if failure is not None and failure.version == version and time.monotonic() - failure.at < RETRY_AFTER_S:
                raise gr.Error(f"Cannot load model {name!r}: {failure.reason}")
            job = self._jobs.get(name)
            if job is None:
                job = self._jobs[name] = Future()
                threading.Thread(target=self._load_job, args=(entry, version, job), name=f"load {name}",
                                 daemon=True).start()
        try:
            return job.result(timeout=LOAD_WAIT_S)
        except TimeoutError:
            doing = "downloaded from the Hugging Face Hub" if entry.source == "hub" else "loaded"
            raise gr.Error(f"Model {name!r} is still being {doing}: try again in a minute.") from None

    def _load_job(self, entry: ModelEntry, version: Any, job: Future) -> None:
        """Resolve (the Hub is asked once; its files are then local) and load a model, without the lock."""
        try:
            folder = resolve(entry.location)
            model = load_folder(folder, device=self.device)
        except (pixelrnn.CheckpointError, OSError) as err:
            self._failed(entry, version, job, str(err))
            return
        except Exception as err:
            log.exception("loading %s failed", entry.name)
            self._failed(entry, version, job, f"{type(err).__name__}: {err}")
            return
        if entry.source == "hub":
            entry.metrics, entry.config = read_json(folder / METRICS), read_json(folder / "config.json")
        entry.spec = spec_of(model, entry.metrics.get("dataset"))
        entry.parameters = sum(p.numel() for p in model.parameters())
        with self._lock:
            self._cache[entry.name] = (version, model)
            self._failures.pop(entry.name, None)
            del self._jobs[entry.name]
        job.set_result(model)

    def _failed(self, entry: ModelEntry, version: Any, job: Future, reason: str) -> None:
        """Remember a failed load and report it to the requests waiting for it."""
        reason = redact_paths(reason)
        with self._lock:
            self._failures[entry.name] = LoadFailure(version, reason, time.monotonic())
            del self._jobs[entry.name]
        job.set_exception(gr.Error(f"Cannot load model {entry.name!r}: {reason}"))

    def version(self, name: str) -> Any:
        with self._lock:
            return self._cache.get(name, (None,))[0]


# --- likelihoods ---------------------------------------------------------------------------------------

def class_log_likelihoods(model: Model, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log p(x | y) in nats for every class, (num_classes,)."""
    with torch.inference_mode():
        batch = x[None].expand(num_classes, *x.shape)
        return model.log_prob(batch, torch.arange(num_classes, device=x.device)).double().cpu()


def maps_of(model: Model, x: torch.Tensor, y: int | None) -> dict[str, np.ndarray]:
    """Per-sub-pixel NLL and entropy (bits) and distributions, as numpy arrays."""
    return {k: v.float().cpu().numpy() for k, v in pixelrnn.likelihood_maps(model, x, y=y).items()}


@dataclass
class Analysis:
    """One image under one model."""

    pixels: np.ndarray  # (C, H, W) levels
    label: int | None  # class used (given or most likely)
    nll_nats: float
    maps: dict[str, np.ndarray]
    posterior: np.ndarray | None = None  # p(class | x) with a uniform prior
    marginal_nats: float | None = None  # -log p(x) with a uniform prior over classes
    notes: list[str] = field(default_factory=list)


def analyse(model: Model, spec: ModelSpec, prepared: PreparedImage, y: int | None) -> Analysis:
    device = next(model.parameters()).device
    x = prepared.tensor().to(device)
    posterior = marginal = None
    if spec.num_classes:
        per_class = class_log_likelihoods(model, x, spec.num_classes)
        log_joint = per_class - math.log(spec.num_classes)
        marginal = -float(torch.logsumexp(log_joint, 0))
        posterior = torch.softmax(log_joint, 0).numpy()
        if y is None:
            y = int(per_class.argmax())
        nll = -float(per_class[y])
    else:
        with torch.inference_mode():
            nll = -float(model.log_prob(x[None]))
    return Analysis(prepared.pixels, y, nll, maps_of(model, x, y), posterior, marginal, list(prepared.notes))


# --- model cards -----------------------------------------------------------------------------------------

def test_result(entry: ModelEntry) -> tuple[str, str]:
    """(this checkpoint's test NLL, the paper's figure for the same architecture and data) as text."""
    metrics = entry.metrics
    dataset = metrics.get("dataset")
    unit = metrics.get("unit") if metrics.get("unit") in ("nats", "bits/dim") else None
    nats, bpd = as_number(metrics.get("test_nll_nats")), as_number(metrics.get("test_bits_per_dim"))
    unit = unit or ("nats" if dataset == "binarized_mnist" else "bits/dim")
    value = nats if unit == "nats" else bpd
    ours = "not evaluated yet" if value is None else f"{value:.2f} nats" if unit == "nats" else f"{value:.3f} bits/dim"
    if value is not None and isinstance(metrics.get("test_images"), int):
        ours += f" ({metrics['test_images']:,} test images)"
    paper_unit, figures = PAPER_RESULTS.get(dataset, (None, {}))
    arch = entry.spec.arch if entry.spec else metrics.get("arch")
    paper = "–"
    if arch in figures and paper_unit == unit:
        paper = f"{figures[arch]:.2f} {'nats' if unit == 'nats' else 'bits/dim'} ({ARCH_NAMES.get(arch, arch)})"
        if entry.spec and entry.spec.factor:
            paper += ", single-scale"
        if entry.spec and entry.spec.num_classes:
            paper += ", unconditional"
    return ours, paper


def validation_result(entry: ModelEntry) -> str:
    """The selected weights' NLL on the validation split, as text ("–" if not recorded)."""
    metrics = entry.metrics
    nats, bpd = as_number(metrics.get("valid_nll_nats")), as_number(metrics.get("valid_bits_per_dim"))
    if metrics.get("dataset") == "binarized_mnist" or metrics.get("unit") == "nats":
        return "–" if nats is None else f"{nats:.2f} nats"
    return "–" if bpd is None else f"{bpd:.3f} bits/dim"


def model_title(entry: ModelEntry) -> str:
    if entry.spec is None:
        return "(not loaded yet)" if entry.source == "hub" else "?"
    name = ARCH_NAMES.get(entry.spec.arch, entry.spec.arch)
    name = f"Multi-Scale {name}" if entry.spec.factor else name
    return name + (", class-conditional" if entry.spec.num_classes else "")


def model_status(registry: Registry, entry: ModelEntry) -> str:
    """A model's state for a Markdown table cell: ready, on the Hub, or why it cannot be used."""
    problem = registry.problem(entry.name)
    if problem is not None:
        return "⚠ " + problem.replace("|", "\\|").replace("\n", " ")
    return "on the Hub, loaded on first use" if entry.spec is None else "ready"


def models_table(registry: Registry) -> str:
    """Markdown table of every model, from its metadata and the registry's state only (nothing is loaded)."""
    if not registry.entries:
        return "No models found: put checkpoint folders into the checkpoints folder ($PIXELRNN_CHECKPOINTS)."
    rows = ["| model | architecture | data | parameters | test NLL | paper | training | status |",
            "|---|---|---|---|---|---|---|---|"]
    for entry in registry.entries.values():
        metrics = entry.metrics
        dataset = DATASET_INFO.get(metrics.get("dataset"), (metrics.get("dataset") or "?",))[0]
        params = f"{entry.parameters:,}" if entry.parameters else "?"
        ours, paper = test_result(entry)
        wall = as_number(metrics.get("wall_time_s"))
        training = f"{format_duration(wall)} on {metrics.get('device', '?')}" if wall is not None else "?"
        rows.append(f"| `{entry.name}` | {model_title(entry)} | {dataset} | {params} | {ours} | {paper} | {training} | "
                    f"{model_status(registry, entry)} |")
    return "\n".join(rows)


def checkpoint_picture(entry: ModelEntry, filename: str) -> np.ndarray | None:
    """A picture shipped in a local checkpoint folder (samples.png, learning_curve.png), or None."""
    path = Path(entry.location) / filename
    if entry.source != "local" or not path.is_file():  # a regular file of the checkpoint, not an upload
        return None
    try:
        return np.asarray(decode_image(path.read_bytes(), "picture").convert("RGB"))
    except (gr.Error, OSError):
        return None


def model_card(registry: Registry, name: Any) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """(markdown card, samples.png, learning_curve.png; each None if missing) of one model; a Hub model is loaded
    to read its files."""
    entry = registry.entry(name)
    if entry.source == "hub" and entry.spec is None:
        registry.load(name)
    spec, metrics, config = entry.spec, entry.metrics, entry.config
    ours, paper = test_result(entry)
    dataset = DATASET_INFO.get(metrics.get("dataset"), (metrics.get("dataset") or "unknown",))[0]
    layers = config.get("layers", "?")
    arch = f"{model_title(entry)}: {layers} layer{'' if layers == 1 else 's'}, h = {config.get('hidden', '?')}"
    if spec and spec.factor:
        arch += f", small image subsampled by {spec.factor}"
    params = entry.parameters
    training = []
    for key, text in (("steps", "{:,.0f} steps"), ("epochs", "{:.2f} epochs"), ("batch_size", "batch {:.0f}")):
        if as_number(metrics.get(key)) is not None:
            training.append(text.format(metrics[key]))
    if as_number(metrics.get("wall_time_s")) is not None:
        training.append(format_duration(metrics["wall_time_s"]))
    if metrics.get("device"):
        training.append(f"on {metrics['device']}")
    if entry.source == "local":
        try:
            where = f"local folder `{Path(entry.location).resolve().relative_to(REPO_ROOT)}`"
        except ValueError:  # outside the app: its name only, no server path
            where = f"local folder `{entry.name}`"
    else:
        where = f"Hugging Face Hub [`{entry.location}`](https://huggingface.co/{entry.location})"
    classes = f"{spec.num_classes} classes: {', '.join(spec.class_names)}" if spec and spec.num_classes else "none"
    lines = [f"| Model | `{entry.name}` |", "|---|---|",
             f"| Architecture | {arch} |",
             f"| Data | {dataset}, {spec.describe() if spec else '?'} |",
             f"| Conditioning | {classes} |",
             f"| Parameters | {params:,} |" if isinstance(params, int) else "| Parameters | ? |",
             f"| Test NLL | **{ours}** |",
             f"| Validation NLL | {validation_result(entry)} |",
             f"| Paper (van den Oord et al., 2016) | {paper} |",
             f"| Training | {', '.join(training) or 'no record'} |",
             f"| Weights | {where} |",
             f"| Running on | {registry.device} |",
             f"| Status | {model_status(registry, entry)} |"]
    return "\n".join(lines), checkpoint_picture(entry, SAMPLES), checkpoint_picture(entry, LEARNING_CURVE)


# --- the endpoints ---------------------------------------------------------------------------------------

class Studio:
    """The app's endpoints as methods over a Registry; generators stream (image, distribution, status)."""

    def __init__(self, registry: Registry, cpu_threads: int = 1):
        self.registry, self.cpu_threads = registry, cpu_threads
        self._analyses: OrderedDict[tuple, Analysis] = OrderedDict()
        self._analyses_lock = threading.Lock()
        self._long_job = threading.Lock()  # held by the one sampling request above LONG_WORK
        self._downloads = tempfile.TemporaryDirectory(prefix="pixelrnn-prnn-")  # .prnn files offered for download

    # -- helpers --
    def _threads(self) -> None:
        """Sampling runs thousands of tiny ops: one CPU thread per request is faster than two contending ones
        (intra-op threads on a busy machine can be 10-100x slower). The setting holds per worker thread."""
        if self.registry.device == "cpu" and self.cpu_threads and torch.get_num_threads() != self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)

    def class_update(self, name: Any, allow_auto: bool = False) -> dict:
        """Class dropdown for the chosen model: hidden for unconditional models."""
        try:
            spec = self.registry.spec(name)
        except gr.Error:
            return gr.update(choices=[], value=None, visible=False)
        if not spec.num_classes:
            return gr.update(choices=[], value=None, visible=False)
        choices = ([AUTO_CLASS] if allow_auto else []) + list(spec.class_names)
        return gr.update(choices=choices, value=choices[0], visible=True)

    def _steps_total(self, spec: ModelSpec) -> int:
        small = (spec.height // spec.factor) * (spec.width // spec.factor) if spec.factor else 0
        return spec.height * spec.width + small

    @contextlib.contextmanager
    def _capacity(self, batch: int, spec: ModelSpec, fewer: str) -> Iterator[None]:
        """Admit a sampling request of `batch` images (particles included): its work is batch x pixels x channels
        pixel samples. Above MAX_WORK it is refused; above LONG_WORK it runs only if no other such job does, so
        that of the SAMPLING_SLOTS concurrent requests at least SAMPLING_SLOTS - 1 are always free for short
        ones. `fewer` names what to reduce."""
        work = batch * spec.channels * self._steps_total(spec)
        if work > MAX_WORK:
            raise gr.Error(f"This request needs {work:,} pixel samples ({batch} images x {spec.channels} channels x "
                           f"{self._steps_total(spec):,} pixels), more than the {MAX_WORK:,} one request may use: "
                           f"ask for fewer {fewer}.")
        if work <= LONG_WORK:
            yield
            return
        if not self._long_job.acquire(blocking=False):
            raise gr.Error(f"Another large request is running (those above {LONG_WORK:,} pixel samples run one at a "
                           f"time; this one needs {work:,}): try again in a minute, or ask for fewer {fewer}.")
        try:
            yield
        finally:
            self._long_job.release()
            release_memory()

    def _stream(self, steps: Iterable[pixelrnn.Step], spec: ModelSpec, pace: float, progress: Any,
                render: Callable[[pixelrnn.Step, bool], tuple[np.ndarray, np.ndarray]], summary: Callable[[Any], str]
                ) -> Iterator[tuple]:
        """Throttle, pace and render sampler steps into (image, distribution, status) updates."""
        gate, total = FrameGate(), self._steps_total(spec)
        pacer = Pacer(total, pace)
        last = None
        for k, (step, final) in enumerate(with_last(steps), start=1):
            pacer.wait(k)
            last = step
            if not gate.due(final):
                continue
            started = time.monotonic()
            image, dist = render(step, final)
            if not final and progress is not None:
                progress(min(k / total, 1.0), desc=f"pixel {k} of {total}")
            yield (gate.fresh("image", image), gate.fresh("dist", dist),
                   gate.fresh("status", summary(last)) if final else gr.skip())
            gate.spent(time.monotonic() - started)

    # -- Generate --
    @user_errors
    def generate(self, model_name: str, class_label: Any = None, n: Any = 4, temperature: Any = 1.0, seed: Any = 0,
                 pace: Any = 0.0, progress: gr.Progress = PROGRESS) -> Iterator[tuple]:
        """Stream n samples pixel by pixel: (image grid, current pixel's distribution, status)."""
        self._threads()
        spec = self.registry.spec(model_name)
        y = parse_class(class_label, spec)
        n = parse_int(n, "Number of samples", 1, MAX_SAMPLES)
        temperature, seed, pace = parse_temperature(temperature), parse_seed(seed), parse_pace(pace)
        model = self.registry.load(model_name)
        start = time.monotonic()
        steps = pixelrnn.sample_steps(model, n, y=y, temperature=temperature, seed=seed, every=1)
        scale = grid_scale(spec.height, spec.width, n)
        cols = math.ceil(math.sqrt(n))

        def render(step: pixelrnn.Step, final: bool) -> tuple[np.ndarray, np.ndarray]:
            pixels = step.image.cpu().numpy()
            s = scale * (spec.height // pixels.shape[2])
            pending = None if final else ~step.done.cpu().numpy()
            cells = render_images(pixels, spec.levels, s, pending, None if final else step.position)
            r, j = step.position
            where = "small image, " if step.stage == "small" else ""
            title = f"Sample 1, {where}pixel (row {r}, col {j}); sampled value marked"
            dist = render_distribution(step.probs[0].cpu().numpy(), pixels[0, :, r, j].tolist(), title)
            return tile(cells, cols), dist

        def summary(_: Any) -> str:
            what = f" of class {spec.class_names[y]!r}" if y is not None else ""
            return (f"Generated {n} sample{'s' if n > 1 else ''}{what} with `{model_name}` in "
                    f"{time.monotonic() - start:.1f} s (seed {seed}, temperature {temperature:g}).")

        with self._capacity(n, spec, "samples"):
            yield from self._stream(steps, spec, pace, progress, render, summary)

    # -- Complete --
    @user_errors
    def complete(self, model_name: str, editor: Any, class_label: Any = None, mode: Any = "plain",
                 particles: Any = 8, n: Any = 3, temperature: Any = 1.0, seed: Any = 0, pace: Any = 0.0,
                 progress: gr.Progress = PROGRESS) -> Iterator[tuple]:
        """Stream completions of the painted region: (original | completions, current distribution, status)."""
        self._threads()
        spec = self.registry.spec(model_name)
        y = parse_class(class_label, spec)
        smc = parse_mode(mode)
        k = parse_int(particles, "Particles", 2, MAX_PARTICLES) if smc else 1
        n = parse_int(n, "Number of completions", 1, MAX_COMPLETIONS)
        temperature, seed, pace = parse_temperature(temperature), parse_seed(seed), parse_pace(pace)
        with self._capacity(n * k, spec, "completions or particles"):  # refused before the upload is read
            background, layers = editor_parts(editor)
            prepared = prepare_image(background, spec)
            mask = extract_mask(layers, prepared, spec.height, spec.width)
            if not mask.any():
                raise gr.Error("The mask is empty: paint over the part of the image to regenerate with the brush.")
            model = self.registry.load(model_name)
            start = time.monotonic()
            steps = pixelrnn.sample_steps(model, n, y=y, image=prepared.tensor(), mask=torch.from_numpy(mask),
                                          temperature=temperature, seed=seed, every=1, particles=k)
            scale = display_scale(spec.height, spec.width)
            original = masked_original(prepared.pixels, spec.levels, mask, scale)

            def render(step: pixelrnn.Step, final: bool) -> tuple[np.ndarray, np.ndarray]:
                pixels = step.image.cpu().numpy()
                f = spec.height // pixels.shape[2]
                stage_mask = mask[::f, ::f] if f > 1 else mask
                pending = None if final else stage_mask & ~step.done.cpu().numpy()
                cells = render_images(pixels, spec.levels, scale * f, pending, None if final else step.position)
                r, j = step.position
                known = not stage_mask[r, j]
                where = "small image, " if step.stage == "small" else ""
                title = (f"Completion 1, {where}pixel (row {r}, col {j}); "
                         + ("known pixel, scored" if known else "sampled value marked"))
                dist = render_distribution(step.probs[0].cpu().numpy(), pixels[0, :, r, j].tolist(), title)
                return tile([original, *cells], min(n + 1, 5)), dist

            def summary(step: Any) -> str:
                how = f"context-aware (SMC, {k} particles each)" if smc else "plain"
                text = (f"{n} {how} completion{'s' if n > 1 else ''} of {int(mask.sum())} pixels with `{model_name}` in "
                        f"{time.monotonic() - start:.1f} s (seed {seed}). Left: the original, the region to regenerate "
                        f"in red.")
                if smc and step is not None and step.ess:
                    ess = torch.stack([e.float().cpu() for e in step.ess]).mean()
                    text += f" Mean effective sample size per row: {float(ess):.1f} of {k}."
                if prepared.notes:
                    text += f" Input: {'; '.join(prepared.notes)}."
                return text

            yield from self._stream(steps, spec, pace, progress, render, summary)

    # -- Inspect --
    def _analysis(self, name: str, image: Any, class_label: Any) -> tuple[ModelSpec, Analysis]:
        self._threads()
        spec = self.registry.spec(name)
        y = parse_class(class_label, spec, allow_auto=True)
        prepared = prepare_image(image, spec)
        model = self.registry.load(name)
        key = (name, self.registry.version(name), hashlib.blake2b(prepared.pixels.tobytes()).hexdigest(), y)
        with self._analyses_lock:
            if key in self._analyses:
                self._analyses.move_to_end(key)
                return spec, self._analyses[key]
        analysis = analyse(model, spec, prepared, y)
        with self._analyses_lock:
            self._analyses[key] = analysis
            while len(self._analyses) > 16:
                self._analyses.popitem(last=False)
        return spec, analysis

    def _nll_table(self, name: str, image: Any, spec: ModelSpec, analysis: Analysis) -> str:
        rows = ["| model | architecture | NLL (nats) | bits/dim | note |", "|---|---|---|---|---|"]
        for other, entry in self.registry.entries.items():
            if entry.spec is None or entry.spec.fmt != spec.fmt:
                continue
            if other == name:
                result = analysis
            else:
                try:
                    _, result = self._analysis(other, image, None)
                except gr.Error as err:
                    rows.append(f"| `{other}` | {model_title(entry)} | – | – | {err.message} |")
                    continue
            note = ""
            if result.posterior is not None:
                best = int(result.posterior.argmax())
                note = (f"given class {entry.spec.class_names[result.label]!r}; "
                        f"-log p(x) = {result.marginal_nats:.1f} nats over all classes; "
                        f"most likely class {entry.spec.class_names[best]!r} ({result.posterior[best]:.0%})")
            if entry.spec.factor:
                note = (note + "; " if note else "") + "maps: full-size model given the small image"
            title = f"**`{other}`**" if other == name else f"`{other}`"
            rows.append(f"| {title} | {model_title(entry)} | {result.nll_nats:.2f} | "
                        f"{pixelrnn.bits_per_dim(result.nll_nats, spec.channels * spec.height * spec.width):.4f} | {note} |")
        return "\n".join(rows)

    @user_errors
    def inspect(self, model_name: str, image: Any, class_label: Any = None) -> tuple:
        """Likelihood of an image: (model's view, surprise map, entropy map, NLL table, distribution of the most
        surprising pixel, its description, row, col)."""
        spec, analysis = self._analysis(model_name, image, class_label)
        scale = inspect_scale(spec.height, spec.width)
        view = upscale(to_rgb(analysis.pixels, spec.levels), scale)
        surprise = render_heatmap(analysis.maps["nll_bits"].sum(0), scale, "surprise, bits")
        entropy = render_heatmap(analysis.maps["entropy_bits"].sum(0), scale, "entropy, bits")
        table = self._nll_table(model_name, image, spec, analysis)
        if analysis.notes:
            table += f"\n\nInput: {'; '.join(analysis.notes)}."
        r, c = np.unravel_index(int(analysis.maps["nll_bits"].sum(0).argmax()), (spec.height, spec.width))
        dist, text = self._pixel_view(spec, analysis, int(r), int(c))
        return view, surprise, entropy, table, dist, "Most surprising pixel. " + text, int(r), int(c)

    def _pixel_view(self, spec: ModelSpec, analysis: Analysis, r: int, c: int) -> tuple[np.ndarray, str]:
        probs = analysis.maps["probs"][:, :, r, c]  # (levels, C)
        true = analysis.pixels[:, r, c].tolist()
        title = f"Pixel (row {r}, col {c}) given the pixels before it; true value marked"
        nll = analysis.maps["nll_bits"][:, r, c].sum()
        entropy = analysis.maps["entropy_bits"][:, r, c].sum()
        value = true[0] if spec.channels == 1 else "(" + ", ".join(str(v) for v in true) + ")"
        text = (f"Pixel (row {r}, col {c}) = {value}: surprise {nll:.2f} bits, entropy of the prediction "
                f"{entropy:.2f} bits.")
        return render_distribution(probs, true, title), text

    @user_errors
    def pixel(self, model_name: str, image: Any, class_label: Any = None, row: Any = 0, col: Any = 0) -> tuple:
        """The predictive distribution of one pixel (row, col in model pixels): (chart, description)."""
        self._threads()
        spec, analysis = self._analysis(model_name, image, class_label)
        r = parse_int(row, "Row", 0, spec.height - 1)
        c = parse_int(col, "Column", 0, spec.width - 1)
        return self._pixel_view(spec, analysis, r, c)

    def select_pixel(self, model_name: str, evt: gr.SelectData) -> tuple:
        """A click on an Inspect image -> (row, col) in model pixels; skipped outside the image."""
        try:
            spec = self.registry.spec(model_name)
        except gr.Error:
            return gr.skip(), gr.skip()
        where = click_to_pixel(evt.index, spec.height, spec.width, inspect_scale(spec.height, spec.width))
        return (gr.skip(), gr.skip()) if where is None else where

    # -- Compress --
    def _compatible(self, name: str) -> list[str]:
        """`name` first, then every other healthy model of the same format (channels, size, levels)."""
        fmt = self.registry.spec(name).fmt
        return [name] + [other for other, entry in self.registry.entries.items()
                         if other != name and entry.spec is not None and entry.spec.fmt == fmt
                         and self.registry.problem(other) is None]

    @user_errors
    def compress(self, model_name: str, image: Any, class_label: Any = None) -> Iterator[tuple]:
        """Code an image losslessly with every compatible model (the chosen one first), each row of the sizes
        table as it is done: yields (sizes table, .prnn file of the chosen model, status)."""
        self._threads()
        spec = self.registry.spec(model_name)
        parse_class(class_label, spec, allow_auto=True)
        prepared = prepare_image(image, spec)
        pixels = torch.from_numpy(prepared.pixels)
        dims = spec.channels * spec.height * spec.width
        raw_bytes = math.ceil(dims * math.log2(spec.levels) / 8)
        rows = ["| coder | bytes | bits/dim | model NLL of this image (bits/dim) | time | note |",
                "|---|---:|---:|---:|---:|---|"]
        baselines = [f"| {fmt} (lossless) | {size:,} | {8 * size / dims:.3f} | | | |"
                     for fmt, size in compress.baseline_sizes(compress.levels_to_image(pixels, spec.levels)).items()]
        baselines.append(f"| uncompressed ({spec.levels} levels) | {raw_bytes:,} | {8 * raw_bytes / dims:.3f} | | | |")
        download = None
        names = self._compatible(model_name)
        for k, name in enumerate(names):
            _, analysis = self._analysis(name, image, class_label if name == model_name else None)
            model = self.registry.load(name)
            start = time.monotonic()
            data = compress.encode(model, pixels, analysis.label, name=name)
            seconds = time.monotonic() - start
            nll = pixelrnn.bits_per_dim(analysis.nll_nats, dims)
            header = len(data) - len(compress.read_header(data)["payload"])
            note = f"{header} B header" + ("" if analysis.label is None else
                                           f"; class {self.registry.spec(name).class_names[analysis.label]!r}")
            title = f"**`{name}`**" if name == model_name else f"`{name}`"
            rows.append(f"| {title} | {len(data):,} | {8 * len(data) / dims:.3f} | {nll:.3f} | {seconds:.1f} s | "
                        f"{note} |")
            if name == model_name:
                folder = Path(tempfile.mkdtemp(dir=self._downloads.name))
                download = folder / f"{Path(_file_path(image) or 'image').stem[:40]}.{name}.prnn"
                download.write_bytes(data)
            done = k + 1 == len(names)
            status = (f"Coded with {len(names)} model{'s' if len(names) > 1 else ''}: the `.prnn` file of "
                      f"`{model_name}` is ready to download; upload it below to decode it."
                      if done else f"Coding with `{names[k + 1]}` ({k + 2} of {len(names)})…")
            if prepared.notes:
                status += f" Input: {'; '.join(prepared.notes)}."
            yield "\n".join(rows + baselines), str(download), status

    @user_errors
    def decompress(self, file: Any, progress: gr.Progress = PROGRESS) -> Iterator[tuple]:
        """Decode an uploaded .prnn file with the model named in it, row by row: yields (image, status). The image
        is only presented as decoded once its checksum holds; a file that fails clears it."""
        self._threads()
        path = _file_path(file)
        if not path:
            raise gr.Error("No file: upload a .prnn file made by Compress (or `python -m pixelrnn.compress`).")
        data = read_upload(path, "file")
        try:
            header = compress.read_header(data)
        except compress.CompressionError as err:
            raise gr.Error(f"This file cannot be decoded: {err}.") from None
        name = header["name"]
        if name not in self.registry.entries:
            raise gr.Error(f"This file was compressed with the model {name or '(unnamed)'!r}, which this app does not "
                           f"have (it has {', '.join(self.registry.names)}).")
        spec = self.registry.spec(name)
        model = self.registry.load(name)
        start, gate, scale = time.monotonic(), FrameGate(), display_scale(spec.height, spec.width, 280)
        rows = spec.height + (spec.height // spec.factor if spec.factor else 0)
        done, pixels = 0, None
        try:
            for stage, r, image in compress.decode_rows(model, data):
                done, pixels = done + 1, image.numpy()
                if done == rows or not gate.due():  # the whole image is shown once it is verified
                    continue
                started = time.monotonic()
                pending = np.zeros(pixels.shape[2:], dtype=bool)
                pending[r + 1 :] = True
                [cell] = render_images(pixels, spec.levels, scale * (spec.height // pixels.shape[2]), pending)
                if progress is not None:
                    progress(done / rows, desc=f"row {done} of {rows}")
                yield gate.fresh("image", cell), f"Decoding with `{name}`: row {done} of {rows} (not verified yet)…"
                gate.spent(time.monotonic() - started)
        except compress.CompressionError as err:
            yield None, f"**Not decoded:** {err}."
            raise gr.Error(f"This file cannot be decoded: {err}.") from None
        label = "" if header["label"] is None else f", class {spec.class_names[header['label']]!r}"
        [whole] = render_images(pixels, spec.levels, scale)
        yield whole, (f"Decoded {len(data):,} bytes ({8 * len(data) / (spec.channels * spec.height * spec.width):.3f}"
                          f" bits/dim) with `{name}`{label} in {time.monotonic() - start:.1f} s: the checksum "
                          f"holds, every pixel is exact.")

    # -- Models --
    @user_errors
    def model_card(self, model_name: str) -> tuple[str, np.ndarray | None, np.ndarray | None]:
        """(markdown card, samples image, learning curve) of a model."""
        return model_card(self.registry, model_name)


def stopped() -> str:
    """Status shown when the Stop button cancels a stream."""
    return "Stopped."


def example_images() -> list[str]:
    """Example images shipped in assets/ (screenshots excluded)."""
    if not ASSETS_DIR.is_dir():
        return []
    return [str(p) for p in sorted(ASSETS_DIR.glob("*.png")) if not p.name.startswith("screenshot")]
