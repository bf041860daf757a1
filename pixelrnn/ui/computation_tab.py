"""The "How it computes" tab: one teacher-forced pass played the way the network runs it, from real activations."""

from __future__ import annotations

import functools
import hashlib
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import pixelrnn
from pixelrnn.images import upscale
from pixelrnn.ui.base import Core
from pixelrnn.ui.errors import returns_memory, user_errors
from pixelrnn.ui.params import parse_int
from pixelrnn.ui.pictures import CURSOR_RGB, FIELD_RGB, PENDING_RGB, colormap, draw_text, field_tint
from pixelrnn.views import Panel, computation, layer_fields, receptive_field

PANEL_PX = 96  # displayed size of one layer's map
TITLE_PX, GAP_PX, HEADER_PX = 16, 16, 22
MAX_FRAMES = 96  # an animation shows at most this many steps (evenly spread, the last one always)
MIN_SECONDS, MAX_SECONDS = 2, 30  # the animation's length
KEPT_ANIMATIONS = 32  # animation files kept on disk (the oldest go first)
ARCH_NAMES = {"row_lstm": "Row LSTM", "diagonal_bilstm": "Diagonal BiLSTM", "pixelcnn": "PixelCNN"}
HOW = {
    "row_lstm": "The Row LSTM computes a whole row of each layer at once, top to bottom: the state of a row reads "
                "the row above through a 3x1 convolution (Sec. 3.1), so each pixel sees a triangle above it.",
    "diagonal_bilstm": "The Diagonal BiLSTM skews each layer's map (row r shifted right by r, Fig. 3), so that a "
                       "column of the skewed map is a diagonal of the image; it computes one diagonal per step, in "
                       "two directions: left to right, and right to left on the mirrored map (whose output is "
                       "shifted down a row before the two are added, Sec. 3.2). Each pixel sees the whole past.",
    "pixelcnn": "The PixelCNN computes every position of a layer at once with masked convolutions (Sec. 3.5), "
                "layer after layer: the receptive field grows with depth, and has a blind spot.",
}
RASTER = ("Sampling always goes in raster order, one pixel at a time, whatever the architecture: a pixel's "
          "distribution needs the values of the pixels before it, and those exist only once they are drawn. Rows "
          "and diagonals at once are possible here because the whole image is known (teacher forcing), as in "
          "training and scoring.")


def _panel_picture(panel: Panel, step: int, field: np.ndarray | None, focus: tuple[int, int]) -> np.ndarray:
    """One panel at `step`: computed positions coloured by their state's norm (viridis, this panel's scale), the
    positions computed at this step in red, those still to come grey; `field` (H, W) tinted blue."""
    values, steps = panel.values.numpy(), panel.step.numpy()
    rgb = colormap(values, float(values.max()))
    rgb[steps > step] = PENDING_RGB
    rgb[steps == step] = (0.4 * rgb[steps == step] + 0.6 * np.array(CURSOR_RGB)).astype(np.uint8)
    if field is not None and step >= steps.max():  # the layer is done: where its state at `focus` looks
        rgb[field] = field_tint(rgb[field])
        rgb[focus] = CURSOR_RGB
    rgb[steps < 0] = 255  # a skewed map's padding
    return rgb


def render_frame(panels: list[Panel], step: int, fields: list[np.ndarray], focus: tuple[int, int], caption: str
                 ) -> np.ndarray:
    """The frame of `step`: a row per layer for the Diagonal BiLSTM (its two directions and the skewed map), else
    four layers per row; `fields[layer][state]` (H, W): what each state at the focus pixel depends on
    (`layer_fields`); a caption on top."""
    height = panels[0].values.shape[0]
    scale = max(1, PANEL_PX // height)
    per_row = 3 if any(p.skewed for p in panels) else 4
    rows = [panels[k : k + per_row] for k in range(0, len(panels), per_row)]
    cell_w = [p.values.shape[1] * scale for p in rows[0]]
    width = sum(w + GAP_PX for w in cell_w) + GAP_PX
    canvas = Image.new("RGB", (width, HEADER_PX + len(rows) * (height * scale + TITLE_PX + GAP_PX)), "white")
    draw_text(canvas, (GAP_PX, 4), caption, (40, 40, 40), 13)
    y = HEADER_PX
    for row in rows:
        x = GAP_PX
        for k, panel in enumerate(row):
            field = None if panel.skewed else fields[panel.layer][panel.state]
            picture = upscale(_panel_picture(panel, step, field, focus), scale)
            draw_text(canvas, (x, y), panel.title, (60, 60, 60), 11)
            canvas.paste(Image.fromarray(picture), (x, y + TITLE_PX))
            x += cell_w[k] + GAP_PX
        y += height * scale + TITLE_PX + GAP_PX
    return np.asarray(canvas)


def describe(arch: str, panels: list[Panel], step: int) -> str:
    """What the pass computes at `step`: "layer 2, row 14", "layer 1, diagonal 30", "block 3: every position at
    once"."""
    panel = next(p for p in panels if (p.step == step).any())
    if arch == "pixelcnn":
        return f"{panel.title}: every position at once"
    row, col = (panel.step == step).nonzero()[0].tolist()
    unit = f"row {row}" if arch == "row_lstm" else f"diagonal {row + col}"
    return f"layer {panel.layer + 1}, {unit}"


def frame_steps(total: int) -> list[int]:
    """At most MAX_FRAMES steps of 0..total-1, evenly spread, the first and last included."""
    if total <= MAX_FRAMES:
        return list(range(total))
    return sorted({round(k * (total - 1) / (MAX_FRAMES - 1)) for k in range(MAX_FRAMES)})


FIGURE_SHAPE, FIGURE_PIXEL, FIGURE_PX = (8, 21), (6, 10), 9


@functools.cache
def context_figure(highlight: str) -> np.ndarray:
    """The paper's Fig. 2 (right), drawn by us from models: the context of the red pixel in an 8 x 21 image for
    each architecture, the exact dependency set of a small random model (one layer; two PixelCNN blocks), with
    `highlight`'s panel shaded."""
    panels = []
    for arch, name in ARCH_NAMES.items():
        model = pixelrnn.build_model(arch, 1, 2, *FIGURE_SHAPE, hidden=4, layers=2 if arch == "pixelcnn" else 1)
        field = receptive_field(model, *FIGURE_PIXEL).any(0).numpy()
        rgb = np.full((*FIGURE_SHAPE, 3), 235, np.uint8)
        rgb[field] = FIELD_RGB
        rgb[FIGURE_PIXEL] = CURSOR_RGB
        height, width = (n * FIGURE_PX for n in FIGURE_SHAPE)
        cell = Image.new("RGB", (width + 8, height + 26), (255, 235, 200) if arch == highlight else "white")
        draw_text(cell, (4, 4), name, (40, 40, 40), 13)
        cell.paste(Image.fromarray(upscale(rgb, FIGURE_PX)), (4, 22))
        panels.append(np.asarray(cell))
    return np.concatenate(panels, axis=0)


class ComputationTab:
    """How it computes: an animation of one teacher-forced pass of a model on an image."""

    def __init__(self, core: Core) -> None:
        self.core, self.registry = core, core.registry
        self._folder = tempfile.TemporaryDirectory(prefix="pixelrnn-computation-")
        self._pruning = threading.Lock()

    @user_errors
    @returns_memory
    def play(self, model_name: str, image: Any, class_label: Any = None, seconds: Any = 8) -> tuple:
        """(an animated WebP of the pass lasting `seconds` (then the finished pass for 2 s, looped), the context
        figure, the description)."""
        spec, analysis = self.core.analysis(model_name, image, class_label)
        model = self.registry.load(model_name)
        net = model.large if spec.factor else model
        duration_s = parse_int(seconds, "Animation length (s)", MIN_SECONDS, MAX_SECONDS)
        key = hashlib.blake2b(f"{model_name}|{self.registry.version(model_name)}|{analysis.label}|"
                              f"{duration_s}".encode() + analysis.pixels.tobytes()).hexdigest()[:24]
        path = Path(self._folder.name) / f"{key}.webp"
        if not path.exists():
            self._animate(model, net.arch, analysis.pixels, analysis.label, duration_s, path)
        text = (f"**{ARCH_NAMES[net.arch]}**{' (the full-size stage, given the small image)' if spec.factor else ''}"
                f". {HOW[net.arch]} Colour: the size (norm) of each position's state in this pass, red: the "
                f"positions computed at that step, grey: not yet computed; once a layer is done, blue marks the "
                f"pixels each panel's state at the red dot depends on (measured from the model). {RASTER}")
        return str(path), context_figure(net.arch), text

    def _animate(self, model: pixelrnn.Model, arch: str, pixels: np.ndarray, label: int | None, duration_s: int,
                 path: Path) -> None:
        panels = computation(model, torch.from_numpy(pixels), label)
        height, width = panels[0].values.shape
        focus = (height - height // 4, width // 2)
        fields = [f.numpy() for f in layer_fields(model, *focus, y=label)]
        total = int(max(int(p.step.max()) for p in panels)) + 1
        steps = frame_steps(total)
        frames = [Image.fromarray(render_frame(panels, t, fields, focus,
                                               f"step {t + 1} of {total}: {describe(arch, panels, t)}"))
                  for t in steps]
        each_ms = max(40, int(1000 * duration_s / len(frames)))
        durations = [each_ms] * (len(frames) - 1) + [2000]  # the finished pass stays a moment before the loop
        part = path.with_name(f"{path.stem}.{threading.get_ident()}.part")  # two requests may make the same file
        frames[0].save(part, format="WEBP", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                       lossless=True)
        part.replace(path)
        with self._pruning:  # two requests may prune at once
            kept = sorted(Path(self._folder.name).glob("*.webp"), key=lambda p: p.stat().st_mtime)
            for old in kept[:-KEPT_ANIMATIONS]:
                old.unlink(missing_ok=True)
