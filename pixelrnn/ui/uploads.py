"""Uploads: reading files safely, decoding images, converting them to a model's format, painted masks."""

from __future__ import annotations

import io
import logging
import math
import os
import stat
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import gradio.utils as gradio_utils
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pixelrnn.images import convert_image, to_8bit
from pixelrnn.ui.settings import ASSETS_DIR, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, MIN_SIDE

log = logging.getLogger(__name__)


def file_path(source: Any) -> str | None:
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
        path = file_path(source)
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


IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # the only decoders run on uploads (never EPS and the like)


def decode_image(data: bytes, what: str) -> Image.Image:
    """Decode image file bytes (the first frame, EXIF rotation applied); a bomb is refused from its header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
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
        raise gr.Error(f"The uploaded file is not an image this app reads: use a {', '.join(IMAGE_FORMATS[:-1])} "
                       f"or {IMAGE_FORMATS[-1]} {what}.") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise gr.Error(f"The {what} could not be decoded (truncated or corrupt file): {err}") from err


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
    dataset: str | None = None  # metrics.json's "dataset" ("mnist", "cifar10", ...), where recorded

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
    """Decode an upload safely (`open_image`) and convert it to the model's format (`pixelrnn.images.convert_image`:
    channels, centre crop, resize, quantization, and inversion for light-background single-channel images)."""
    image = open_image(source)
    array, box, notes = convert_image(image, spec.channels, spec.levels, spec.height, spec.width, invert)
    return PreparedImage(array, image.size, box, notes)


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


# the editor drops a file that is not an image without a word (in the browser: nothing reaches the server), so the
# message says which files it takes
NO_EDITOR_IMAGE = (f"No image in the editor: upload a {', '.join(IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1]} picture "
                   f"(the editor ignores other files) or pick an example, then paint the region to regenerate.")


def editor_parts(editor: Any) -> tuple[Any, list[Any]]:
    """An ImageEditor value (dict, or EditorValue-like object) -> (background, layers)."""
    if editor is None:
        raise gr.Error(NO_EDITOR_IMAGE)
    if isinstance(editor, dict):
        background, layers, composite = editor.get("background"), editor.get("layers") or [], editor.get("composite")
    else:
        background, layers = getattr(editor, "background", None), getattr(editor, "layers", None) or []
        composite = getattr(editor, "composite", None)
    if background is None and composite is None:
        raise gr.Error(NO_EDITOR_IMAGE)
    if background is None:
        background = composite  # a canvas drawn from scratch
    return background, list(layers)
