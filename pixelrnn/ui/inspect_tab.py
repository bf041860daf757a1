"""The Inspect tab: an image's likelihood, surprise and entropy maps, one pixel's distribution."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

import pixelrnn
from pixelrnn.images import to_rgb, upscale
from pixelrnn.ui.base import StudioBase
from pixelrnn.ui.cards import Analysis, model_title
from pixelrnn.ui.errors import user_errors
from pixelrnn.ui.params import parse_int
from pixelrnn.ui.pictures import channel_names, click_to_pixel, distribution_table, inspect_scale, render_heatmap
from pixelrnn.ui.uploads import ModelSpec

DISTRIBUTION_PLOTS = 3  # native bar plots of a pixel's distribution per kind, one per channel (grey uses the first)
FEW_LEVELS = 16  # up to this many levels, one labelled bar per level; more, a numeric axis with a bar per level
PLOT_BINS = {"few": None, "many": 1}  # the two kinds of distribution plot in output order, with their x_bin


def distribution_plots(probs: np.ndarray, true: list[int]) -> list[gr.BarPlot]:
    """(levels, C) probabilities of one pixel -> updates of 2 x DISTRIBUTION_PLOTS bar plots, the labelled ones
    (few levels) then the numeric ones (many levels): one per channel, titled with its name, true value and most
    likely value, the true value in its own colour; the others hidden. Two kinds of plot, because Gradio's plot
    does not redraw reliably when an update changes its binning."""
    levels, channels = probs.shape
    labelled = levels <= FEW_LEVELS
    names = channel_names(channels)
    shown = []
    for c in range(channels):
        p, likely = probs[:, c], int(probs[:, c].argmax())
        title = f"{names[c]}: true value {true[c]} (p = {p[true[c]]:.3g}), most likely {likely} (p = {p[likely]:.3g})"
        shown.append(gr.BarPlot(distribution_table(p, true[c], labelled), title=title, visible=True))
    shown += hidden_plots(DISTRIBUTION_PLOTS - channels)
    return shown + hidden_plots(DISTRIBUTION_PLOTS) if labelled else hidden_plots(DISTRIBUTION_PLOTS) + shown


def hidden_plots(n: int = 2 * DISTRIBUTION_PLOTS) -> list[gr.BarPlot]:
    """Updates that empty and hide n distribution plots."""
    return [gr.BarPlot(None, visible=False) for _ in range(n)]


class InspectTab(StudioBase):
    """Inspect: likelihoods and maps of an image."""

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
        """Likelihood of an image: (model's view, surprise map, entropy map, NLL table, the distribution plots of the
        most surprising pixel (one per channel), its description, row, col)."""
        spec, analysis = self._analysis(model_name, image, class_label)
        scale = inspect_scale(spec.height, spec.width)
        view = upscale(to_rgb(analysis.pixels, spec.levels), scale)
        surprise = render_heatmap(analysis.maps["nll_bits"].sum(0), scale, "surprise, bits")
        entropy = render_heatmap(analysis.maps["entropy_bits"].sum(0), scale, "entropy, bits")
        table = self._nll_table(model_name, image, spec, analysis)
        if analysis.notes:
            table += f"\n\nInput: {'; '.join(analysis.notes)}."
        r, c = np.unravel_index(int(analysis.maps["nll_bits"].sum(0).argmax()), (spec.height, spec.width))
        *plots, text = self._pixel_view(spec, analysis, int(r), int(c))
        return view, surprise, entropy, table, *plots, "Most surprising pixel. " + text, int(r), int(c)

    def _pixel_view(self, spec: ModelSpec, analysis: Analysis, r: int, c: int) -> tuple:
        probs = analysis.maps["probs"][:, :, r, c]  # (levels, C)
        true = analysis.pixels[:, r, c].tolist()
        nll = analysis.maps["nll_bits"][:, r, c].sum()
        entropy = analysis.maps["entropy_bits"][:, r, c].sum()
        value = true[0] if spec.channels == 1 else "(" + ", ".join(str(v) for v in true) + ")"
        text = (f"Pixel (row {r}, col {c}) = {value}: surprise {nll:.2f} bits, entropy of the prediction "
                f"{entropy:.2f} bits. Below: its predictive distribution given the pixels before it (hover a bar).")
        return *distribution_plots(probs, true), text

    @user_errors
    def pixel(self, model_name: str, image: Any, class_label: Any = None, row: Any = 0, col: Any = 0) -> tuple:
        """The predictive distribution of one pixel (row, col in model pixels): (a bar plot per channel, its
        description)."""
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
