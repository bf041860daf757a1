"""The Inspect tab: an image's likelihood, surprise and entropy maps, one pixel's distribution."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import torch

import pixelrnn
from pixelrnn.images import to_rgb, upscale
from pixelrnn.ui.base import Core
from pixelrnn.ui.cards import Analysis, model_title
from pixelrnn.ui.errors import returns_memory, user_errors
from pixelrnn.ui.params import parse_int
from pixelrnn.ui.pictures import channel_names, click_to_pixel, draw_cursor, inspect_scale, render_heatmap
from pixelrnn.ui.uploads import ModelSpec, open_image
from pixelrnn.views import influence

BAR_GREY, TRUE_ORANGE = "#5a5a5a", "#f58200"  # bars: predicted; the pixel's true value
PLOT_W, PLOT_H, AXIS_H = 560, 150, 18  # one channel's chart, in SVG units (it scales to the page's width)


def distribution_html(probs: np.ndarray, true: list[int], row: int, col: int) -> str:
    """(levels, C) probabilities of pixel (row, col) -> an HTML block with one SVG bar chart per channel.

    Drawn here rather than by a native plot: the page shows exactly the data of the pixel it names (Gradio's
    bar plot could keep drawing the previous pixel's bars). Each bar says its level and probability on hover
    (an SVG <title>) and carries them as data attributes; the true value's bar is orange."""
    levels, channels = probs.shape
    names = channel_names(channels)
    charts = []
    for c in range(channels):
        p, likely = probs[:, c].astype(np.float64), int(probs[:, c].argmax())
        top, width = max(float(p.max()), 1e-12), PLOT_W / levels
        bars = []
        for v in range(levels):
            height = (PLOT_H - 14) * p[v] / top
            colour = TRUE_ORANGE if v == true[c] else BAR_GREY
            bars.append(f'<rect data-level="{v}" data-p="{p[v]:.6g}" x="{v * width:.2f}" y="{PLOT_H - height:.2f}" '
                        f'width="{max(width - (1 if levels <= 64 else 0), 0.5):.2f}" height="{height:.2f}" '
                        f'fill="{colour}"><title>level {v}: probability {p[v]:.4g}</title></rect>')
        ticks = range(levels) if levels <= 16 else (0, levels // 4, levels // 2, 3 * levels // 4, levels - 1)
        labels = [f'<text x="{(v + 0.5) * width:.1f}" y="{PLOT_H + 13}" font-size="11" text-anchor="middle" '
                  f'fill="#5a5a5a">{v}</text>' for v in ticks]
        title = (f"{names[c]}: true value {true[c]} (p = {p[true[c]]:.3g}, orange), most likely {likely} "
                 f"(p = {p[likely]:.3g})")
        charts.append(f'<figure class="pixel-dist" data-channel="{c}" style="margin:0 0 8px 0">'
                      f'<figcaption style="font-size:0.9em">{title}</figcaption>'
                      f'<svg viewBox="0 0 {PLOT_W} {PLOT_H + AXIS_H}" width="100%" style="max-width:{PLOT_W}px" role="img" '
                      f'aria-label="{title}">{"".join(bars)}{"".join(labels)}</svg></figure>')
    return f'<div id="pixel-dist-data" data-row="{row}" data-col="{col}">{"".join(charts)}</div>'


class InspectTab:
    """Inspect: likelihoods and maps of an image."""

    def __init__(self, core: Core):
        self.core, self.registry = core, core.registry

    def inspect_changed(self, model_name: str, image: Any, class_label: Any = None) -> tuple:
        """Runs when the image or the model's classes change: inspect the image, or empty the outputs."""
        if image is None:  # view, surprise, entropy, table, the distribution, the influence, text, row, col
            return (None,) * 9
        return self.inspect(model_name, image, class_label)

    def _nll_table(self, name: str, image: Any, spec: ModelSpec, analysis: Analysis) -> str:
        rows = ["| model | architecture | NLL (nats) | bits/dim | note |", "|---|---|---|---|---|"]
        for other, entry in self.registry.entries.items():
            if entry.spec is None or entry.spec.fmt != spec.fmt:
                continue
            if other == name:
                result = analysis
            else:
                try:
                    _, result = self.core.analysis(other, image, None)
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
    @returns_memory
    def inspect(self, model_name: str, image: Any, class_label: Any = None) -> tuple:
        """Likelihood of an image: (model's view, surprise map, entropy map, NLL table, the most surprising pixel's
        distribution (a bar chart per channel, as HTML) and influence map, its description, row, col)."""
        image = open_image(image)  # decoded once: the NLL table scores it with every compatible model
        spec, analysis = self.core.analysis(model_name, image, class_label)
        scale = inspect_scale(spec.height, spec.width)
        view = upscale(to_rgb(analysis.pixels, spec.levels), scale)
        surprise = render_heatmap(analysis.maps["nll_bits"].sum(0), scale, "surprise, bits")
        entropy = render_heatmap(analysis.maps["entropy_bits"].sum(0), scale, "entropy, bits")
        table = self._nll_table(model_name, image, spec, analysis)
        if analysis.notes:
            table += f"\n\nInput: {'; '.join(analysis.notes)}."
        r, c = np.unravel_index(int(analysis.maps["nll_bits"].sum(0).argmax()), (spec.height, spec.width))
        chart, influence_map, text = self._pixel_view(model_name, spec, analysis, int(r), int(c))
        return view, surprise, entropy, table, chart, influence_map, "Most surprising pixel. " + text, int(r), int(c)

    def _pixel_view(self, model_name: str, spec: ModelSpec, analysis: Analysis, r: int, c: int) -> tuple:
        """(the pixel's distribution chart, its influence map, its description)."""
        probs = analysis.maps["probs"][:, :, r, c]  # (levels, C)
        true = analysis.pixels[:, r, c].tolist()
        nll = analysis.maps["nll_bits"][:, r, c].sum()
        entropy = analysis.maps["entropy_bits"][:, r, c].sum()
        value = true[0] if spec.channels == 1 else "(" + ", ".join(str(v) for v in true) + ")"
        text = (f"Pixel (row {r}, col {c}) = {value}: surprise {nll:.2f} bits, entropy of the prediction "
                f"{entropy:.2f} bits. Below: its predictive distribution given the pixels before it (hover a bar).")
        strength = influence(self.registry.load(model_name), torch.from_numpy(analysis.pixels), r, c,
                             y=analysis.label).numpy()
        scale = inspect_scale(spec.height, spec.width)
        influence_map = render_heatmap(strength, scale, "influence on this pixel")
        draw_cursor(influence_map, (r, c), scale)
        return distribution_html(probs, true, r, c), influence_map, text

    @user_errors
    def pixel(self, model_name: str, image: Any, class_label: Any = None, row: Any = 0, col: Any = 0) -> tuple:
        """One pixel (row, col in model pixels): (its predictive distribution, a bar chart per channel as HTML; its
        influence map; its description)."""
        self.core.threads()
        spec, analysis = self.core.analysis(model_name, image, class_label)
        r = parse_int(row, "Row", 0, spec.height - 1)
        c = parse_int(col, "Column", 0, spec.width - 1)
        return self._pixel_view(model_name, spec, analysis, r, c)

    def select_pixel(self, model_name: str, evt: gr.SelectData) -> tuple:
        """A click on an Inspect image -> (row, col) in model pixels; skipped outside the image."""
        try:
            spec = self.registry.spec(model_name)
        except gr.Error:
            return gr.skip(), gr.skip()
        where = click_to_pixel(evt.index, spec.height, spec.width, inspect_scale(spec.height, spec.width))
        return (gr.skip(), gr.skip()) if where is None else where
