"""Pictures <-> a model's integer-level images (C, H, W): `load_image` turns any picture into a model's format,
the helpers below turn levels back into pictures (shared by the sample-grid CLI, compression and the demo)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from pixelrnn.model import Model, MultiScalePixelRNN

GAP_PX = 4
GAP_RGB = (229, 231, 235)  # light grey between images


def levels_to_uint8(x: np.ndarray, levels: int) -> np.ndarray:
    """Integer levels -> 8-bit values (0 -> 0, levels-1 -> 255)."""
    return np.rint(np.asarray(x, dtype=np.float64) * (255.0 / (levels - 1))).astype(np.uint8)


def upscale(array: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (H, W, ...) by an integer factor."""
    return array.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else array


def to_rgb(pixels: np.ndarray, levels: int) -> np.ndarray:
    """(..., C, H, W) levels -> (..., H, W, 3) uint8."""
    array = np.moveaxis(levels_to_uint8(pixels, levels), -3, -1)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def tile(cells: list[np.ndarray], cols: int, gap: int = GAP_PX, gap_rgb: tuple[int, int, int] = GAP_RGB) -> np.ndarray:
    """Equal-size (h, w, 3) cells -> one image, `cols` per row, separated by `gap` pixels of colour `gap_rgb`."""
    h, w = cells[0].shape[:2]
    rows = math.ceil(len(cells) / cols)
    cols = min(cols, len(cells))
    canvas = np.empty((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), dtype=np.uint8)
    canvas[:] = gap_rgb
    for k, cell in enumerate(cells):
        r, c = divmod(k, cols)
        canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = cell
    return canvas


# --- any picture -> a model's format ---------------------------------------------------------------------

def to_8bit(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Any PIL mode -> 8-bit "L" or "RGB", transparency composited over black -> (image, notes)."""
    notes = []
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float32)  # one float32 copy, then worked on in place (a 25 MP upload:
        top = float(array.max()) if array.size else 0.0  # 100 MB, where float64 temporaries took 600 MB)
        if mode == "F":
            scale = 255.0 if top <= 1.0 else (255.0 / top if top > 255 else 1.0)
        else:
            scale = 1 / 257 if (mode.startswith("I;16") or 255 < top <= 65535) else (255.0 / top if top > 255 else 1.0)
        array *= scale
        image = Image.fromarray(np.clip(np.rint(array, out=array), 0, 255, out=array).astype(np.uint8), "L")
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


def convert_image(image: Image.Image, channels: int, levels: int, height: int, width: int, invert: str = "auto"
                  ) -> tuple[np.ndarray, tuple[int, int, int, int], list[str]]:
    """A picture -> (levels (C, H, W) int64, the crop box used, notes on what was done): 8 bits, L or RGB,
    centre-cropped to the aspect ratio, resized (box filter) to H x W, quantized to `levels`.

    invert: "auto" inverts single-channel images with a light border (dark strokes on white paper), because MNIST
    digits are light on dark; "yes" / "no" force it.
    """
    if channels not in (1, 3):
        raise ValueError(f"only 1- or 3-channel models take pictures; this one has {channels} channels")
    if invert not in ("auto", "yes", "no"):
        raise ValueError(f"invert must be 'auto', 'yes' or 'no', got {invert!r}")
    width_in, height_in = image.size
    image, notes = to_8bit(image)
    if image.mode == "RGB" and channels == 1:
        rgb = np.asarray(image)
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            notes.append("colour converted to grayscale")
    elif image.mode == "L" and channels == 3:
        notes.append("grayscale copied to R, G and B")
    image = image.convert("L" if channels == 1 else "RGB")
    box = center_crop_box(width_in, height_in, height, width)
    if box != (0, 0, width_in, height_in):
        notes.append(f"centre-cropped {width_in}x{height_in} to {box[2] - box[0]}x{box[3] - box[1]}")
    if (box[2] - box[0], box[3] - box[1]) != (width, height):
        notes.append(f"resized to {width}x{height}")
    image = image.resize((width, height), Image.Resampling.BOX, box=box)
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if channels == 1 and invert != "no":
        border = np.concatenate([array[0, 0], array[0, -1], array[0, :, 0], array[0, :, -1]])
        if invert == "yes" or (invert == "auto" and border.mean() > 127):
            array = 255 - array
            notes.append("inverted (MNIST digits are light on dark)")
    if levels == 2:
        notes.append("binarized at 128")
    elif levels != 256:
        notes.append(f"quantized to {levels} levels")
    return quantize(array, levels), box, notes


def load_image(source: str | Path | Image.Image | np.ndarray, model: Model, invert: str = "auto"
               ) -> tuple[torch.Tensor, list[str]]:
    """Any picture (a file path, a PIL image or an (H, W[, C]) uint8 array) -> (the model's integer image
    (C, H, W) long, notes on what was done), ready for `sample(..., image=)`, `likelihood_maps` and
    `compress.encode`. EXIF rotation is applied and the first frame of an animation is used."""
    if isinstance(source, (str, Path)):
        with Image.open(source) as opened:
            opened.seek(0)
            image = ImageOps.exif_transpose(opened)
            image.load()
    elif isinstance(source, np.ndarray):
        image = Image.fromarray(source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        raise TypeError(f"load_image takes a path, a PIL image or a numpy array, not {type(source).__name__}")
    large = model.large if isinstance(model, MultiScalePixelRNN) else model
    array, _, notes = convert_image(image, large.channels, large.levels, large.height, large.width, invert)
    return torch.from_numpy(array), notes
