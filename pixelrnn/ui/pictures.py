"""Pictures: upscaled images, cursors, distributions as bar charts (drawn, or tables for native plots), heat maps
with a colour bar."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from cmap import Colormap
from PIL import Image, ImageDraw, ImageFont

from pixelrnn.images import to_rgb, upscale

CELL_PX = 168  # displayed size of one image (upscaled by an integer factor, nearest neighbour)
INSPECT_PX = 224  # displayed size of the Inspect tab's image and maps
PENDING_RGB = (128, 128, 140)  # pixels not sampled yet
MASK_RGB = np.array([255, 40, 40])  # tint of the region to regenerate
CURSOR_RGB = (255, 40, 40)
CHANNEL_RGB = {1: [(90, 90, 90)], 3: [(214, 48, 49), (39, 174, 96), (41, 98, 255)]}
MARK_RGB = (245, 130, 0)
FIELD_RGB = np.array([40, 120, 255])  # tint of the current pixel's receptive field
VIRIDIS = np.rint(Colormap("viridis").lut(256)[:, :3] * 255).astype(np.uint8)  # (256, 3), from the cmap package


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


def field_tint(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours as the receptive-field overlay tints them."""
    return np.rint(0.45 * np.asarray(rgb) + 0.55 * FIELD_RGB).astype(np.uint8)


def render_images(pixels: np.ndarray, levels: int, scale: int, pending: np.ndarray | None = None,
                  cursor: tuple[int, int] | None = None, field: np.ndarray | None = None) -> list[np.ndarray]:
    """(n, C, H, W) levels -> n upscaled (h, w, 3) cells; pending pixels grey, the cursor pixel outlined, the
    pixels of `field` ((H, W) bool: the cursor pixel's receptive field) tinted blue."""
    rgb = to_rgb(pixels, levels).copy()
    if pending is not None:
        rgb[:, pending] = PENDING_RGB
    if field is not None:
        rgb[:, field] = field_tint(rgb[:, field])
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


@functools.lru_cache(maxsize=4096)
def _word(word: str, size: int) -> tuple[Image.Image, float]:
    """A word rendered once as an 8-bit mask, and its advance: FreeType rendering costs about 0.6 ms a call, and a
    streamed frame's distribution has about 20 labels whose words repeat (numbers, names)."""
    face = font(size)
    mask = Image.new("L", (max(1, math.ceil(face.getlength(word)) + 2), size + 6))
    ImageDraw.Draw(mask).text((0, 0), word, fill=255, font=face)
    return mask, face.getlength(word)


def text_length(text: str, size: int) -> float:
    """Width of `text` as `draw_text` lays it out."""
    return sum(_word(word, size)[1] for word in text.split(" ")) + _word(" ", size)[1] * text.count(" ")


def draw_text(image: Image.Image, xy: tuple[float, float], text: str, fill: tuple[int, int, int],
              size: int) -> None:
    """ImageDraw.text in the default font, word by word from a cache of rendered words."""
    x, y = xy
    for word in text.split(" "):
        mask, advance = _word(word, size)
        if word:
            image.paste(fill, (round(x), round(y)), mask)
        x += advance + _word(" ", size)[1]


def draw_bars(canvas: np.ndarray, rows: tuple[int, int], columns: tuple[float, float], heights: np.ndarray,
              colour: tuple[int, int, int], marked: int | None) -> None:
    """One bar per level into an (h, w, 3) canvas in place, all at once: bar v spans columns left + v * bar_w up
    to the next bar (less a 1-pixel gap when bars are 4 pixels or wider) and `heights[v]` pixels up from `bottom`
    (none under half a pixel); the `marked` level's bar is orange."""
    (top, bottom), (left, bar_w) = rows, columns
    x = np.arange(math.floor(left), math.ceil(left + len(heights) * bar_w))
    level = np.clip(np.floor((x - left) / bar_w).astype(int), 0, len(heights) - 1)
    gap = 1 if bar_w >= 4 else 0
    inside = (x >= left) & (x - left - level * bar_w < bar_w - gap)
    height = np.where(inside & (heights[level] >= 0.5), heights[level], 0.0)  # per column
    y = np.arange(top, bottom + 1)[:, None]
    filled = (y >= bottom - height[None, :]) & (height[None, :] > 0)  # (rows, columns)
    colours = np.where((level == marked)[:, None], MARK_RGB, colour).astype(np.uint8)  # (columns, 3)
    region = canvas[top : bottom + 1, x[0] : x[-1] + 1]
    region[filled] = np.broadcast_to(colours, (len(y), len(x), 3))[filled]


def channel_names(channels: int) -> list[str]:
    """What a distribution's channels are called: "value" for grey, R, G, B for colour."""
    return ["value"] if channels == 1 else ["R", "G", "B"][:channels] + [f"c{k}" for k in range(3, channels)]


def render_distribution(probs: np.ndarray, marked: Iterable[int] | None = None, title: str = "",
                        width: int = 360, panel_height: int = 100) -> np.ndarray:
    """Bar chart of a pixel's predictive distributions, one panel per channel.

    probs: (levels, C) probabilities; marked: one value per channel (the sampled or true value), drawn in
    orange with its probability. Few levels use a 0..1 axis; many levels are scaled to the largest bar. 360 px
    wide with 11-14 px text: a phone (about 310 px for it) shows it nearly at its size, readable.
    """
    probs = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0).clip(0, 1)
    levels, channels = probs.shape
    marked = list(marked) if marked is not None else [None] * channels
    names = channel_names(channels)
    colours = CHANNEL_RGB.get(channels, CHANNEL_RGB[1] * channels)
    title_h = 24 if title else 4
    left, right, axis_h = 40, 18, 16
    canvas = np.full((title_h + channels * panel_height, width, 3), 255, dtype=np.uint8)
    plot_w = width - left - right
    bar_w = plot_w / levels
    panels = []  # (top, bottom, y_max) per channel
    for c in range(channels):
        top = title_h + c * panel_height + 16
        bottom = title_h + (c + 1) * panel_height - axis_h
        y_max = 1.0 if levels <= 16 else max(float(probs[:, c].max()), 1e-6) * 1.1
        value = marked[c] if c < len(marked) else None
        draw_bars(canvas, (top, bottom), (left, bar_w), (bottom - top) * np.minimum(probs[:, c] / y_max, 1.0),
                  colours[min(c, len(colours) - 1)], value)
        panels.append((top, bottom, y_max))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    if title:
        size = next((size for size in (14, 13, 12) if text_length(title, size) <= width - 12), 11)
        draw_text(image, (6, 4), title, (30, 30, 30), size)
    for c, (top, bottom, y_max) in enumerate(panels):
        p = probs[:, c]
        draw.line([(left, bottom), (left + plot_w, bottom)], fill=(120, 120, 120))
        draw_text(image, (2, top - 6), f"{y_max:.2g}" if y_max < 1 else "1", (110, 110, 110), 11)
        draw_text(image, (2, bottom - 11), "0", (110, 110, 110), 11)
        value = marked[c] if c < len(marked) else None
        if levels <= 16:
            for v in range(levels):
                draw_text(image, (left + (v + 0.5) * bar_w - 3, bottom + 2), str(v), (90, 90, 90), 11)
                if bar_w >= 40:
                    text = f"{p[v]:.3f}"
                    height = (bottom - top) * min(p[v] / y_max, 1.0)
                    y_text = bottom - height + 2 if height > 16 else bottom - height - 13
                    draw_text(image, (left + (v + 0.5) * bar_w - text_length(text, 11) / 2, y_text), text,
                              (255, 255, 255) if height > 16 else (40, 40, 40), 11)
        else:
            for v in (0, levels // 2, levels - 1):
                draw_text(image, (left + (v + 0.5) * bar_w - 6, bottom + 2), str(v), (90, 90, 90), 11)
        label = f"{names[c]}: most likely {int(p.argmax())} (p={p.max():.3f})"
        if value is not None:
            vx = left + (value + 0.5) * bar_w
            draw.polygon([(vx, bottom + 1), (vx - 5, bottom + 9), (vx + 5, bottom + 9)], fill=MARK_RGB)
            label += f" · marked {value} (p={p[value]:.3f})"
        draw_text(image, (left, top - 15), label, (40, 40, 40), 12)
    return np.asarray(image)


def colormap(values: np.ndarray, vmax: float) -> np.ndarray:
    """Values in [0, vmax] -> (..., 3) uint8 viridis colours."""
    t = np.clip(np.nan_to_num(values / vmax if vmax > 0 else np.zeros_like(values)), 0, 1)
    return VIRIDIS[np.rint(t * (len(VIRIDIS) - 1)).astype(int)]


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
    if not (math.isfinite(x) and math.isfinite(y)):  # NaN or infinity from a crafted request
        return None
    row, col = math.floor(y / scale), math.floor(x / scale)
    if 0 <= row < height and 0 <= col < width:
        return row, col
    return None
