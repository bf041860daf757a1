"""Integer-level images (C, H, W) as pictures: shared by the sample-grid CLI and the demo."""

from __future__ import annotations

import math

import numpy as np

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
