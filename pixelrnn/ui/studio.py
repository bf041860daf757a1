"""`Studio`: the app's endpoints, one object per tab over a shared `Core`; small handlers of the wiring."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import gradio as gr
import numpy as np

from pixelrnn.ui.base import Core
from pixelrnn.ui.cards import model_card
from pixelrnn.ui.compress_tab import CompressTab
from pixelrnn.ui.computation_tab import ComputationTab
from pixelrnn.ui.errors import user_errors
from pixelrnn.ui.inspect_tab import InspectTab
from pixelrnn.ui.registry import Registry
from pixelrnn.ui.sampling import SamplingTabs
from pixelrnn.ui.settings import ASSETS_DIR
from pixelrnn.ui.streaming import PROGRESS_END, is_progress


class Studio:
    """The app's endpoints, one object per tab (`sampling`: Generate, Complete, Upscale; `inspector`; `compressor`;
    `computation`: How it computes) over the `Core` they share (`core`: registry, threads, work limits, streaming,
    cached analyses)."""

    def __init__(self, registry: Registry, cpu_threads: int = 1, gpu: Callable[[Callable], Callable] | None = None,
                 compile: bool | None = None) -> None:
        self.registry = registry
        self.core = Core(registry, cpu_threads, gpu, compile)
        self.sampling, self.inspector, self.compressor = SamplingTabs(self.core), InspectTab(self.core), \
            CompressTab(self.core)
        self.computation = ComputationTab(self.core)

    @user_errors
    def model_card(self, model_name: str) -> tuple[str, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """The Models tab: (markdown card, samples image, learning curve, on-class sheet) of a model."""
        return model_card(self.registry, model_name)


def clear_js(streaming: bool) -> str:
    """A browser-side handler (an event's `js=`, with the outputs as its inputs) that empties the outputs: results
    go when the input they came from does. In the browser the clear happens when the change is reported, never
    after frames that came in later (a server round trip could land after them). With `streaming` (the last output
    a status line), a change reported while a stream runs leaves it alone: the editor and uploads report late,
    sometimes after Run, and a mid-stream clear would take away outputs that the stream's last frames do not
    re-send (unchanged values are skipped)."""
    running = f"String(values.at(-1) ?? '').trimEnd().endsWith({json.dumps(PROGRESS_END)})" if streaming else "false"
    return f"(...values) => {running} ? values : values.map(() => null)"


STOP_SETTLE_S = 0.3  # a running stream sends a frame every 50 ms; those already on the way land within this


def settle() -> None:
    """Wait until the frames of a cancelled stream that were already on the way have landed."""
    time.sleep(STOP_SETTLE_S)


def stopped(status: str | None) -> Any:
    """Status once Stop has cancelled a stream (read after `settle`): "Stopped." if a stream was running (its
    status a progress line), else unchanged: a run that had finished keeps its summary, and Stop while idle
    says nothing."""
    return "Stopped." if is_progress(status) else gr.skip()


def model_changed(outputs: int) -> Callable[[str | None], tuple]:
    """Handler for a model switch, after the tab's stream is cancelled: empties the outputs (the last one is the
    status) and says so if a run was stopped by the switch."""
    def clear(status: str | None) -> tuple:
        return (None,) * (outputs - 1) + ("Stopped: the model was changed." if is_progress(status) else None,)
    return clear


def example_images() -> list[str]:
    """Example images shipped in assets/ (screenshots excluded)."""
    if not ASSETS_DIR.is_dir():
        return []
    return [str(p) for p in sorted(ASSETS_DIR.glob("*.png")) if not p.name.startswith("screenshot")]
