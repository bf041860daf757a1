"""Plot probe (issue 11), not part of the test suite: `python scripts/plot_probe.py [--frames 200]`.

Can the live tabs stream a pixel's distribution as a native Gradio bar plot (hover shows level and probability)
instead of a drawn image, without breaking the animation? For each distribution shape (2 levels x 1 channel,
256 x 1, 256 x 3) a small app streams a 168-pixel sample image at 20 frames/s beside:
  - nothing (the baseline),
  - the drawn distribution (`ui.pictures.render_distribution`, a PNG, what the live tabs show),
  - a native `gr.BarPlot` updated every frame,
  - a native `gr.BarPlot` updated every 4th frame (5 per second).
Headless Chromium counts how many sample images it showed and the gaps between them, and the main thread's long
tasks (over 50 ms, when the page cannot paint). Needs /usr/bin/chromium and playwright, like the browser test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pixelrnn import ui

FRAME_S = ui.streaming.FRAME_INTERVAL_S  # 20 frames/s, the live tabs' rate
VARIANTS = ("none", "image", "plot", "plot 5/s")
OBSERVE = """() => {
  window.shown = []; window.long = [];
  new PerformanceObserver(l => l.getEntries().forEach(e => window.long.push(e.duration))).observe({entryTypes: ['longtask']});
  new MutationObserver(ms => { for (const m of ms) if (m.target.tagName === 'IMG' && m.target.closest('#live'))
    window.shown.push(performance.now()); }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['src']});
}"""


def stream_app(variant: str, levels: int, channels: int, frames: int) -> gr.Blocks:
    rng = np.random.default_rng(0)
    names = ui.pictures.channel_names(channels)

    def stream():
        for k in range(frames):
            image = rng.integers(0, 256, (168, 168, 3), dtype=np.uint8)
            probs = rng.dirichlet(np.ones(levels), channels).T  # (levels, C)
            marked = [int(probs[:, c].argmax()) for c in range(channels)]
            if variant == "image":
                dist = ui.pictures.render_distribution(probs, marked, f"frame {k}")
            elif variant == "none" or (variant == "plot 5/s" and k % 4 and k != frames - 1):
                dist = gr.skip()
            else:
                dist = pd.DataFrame({"level": np.tile(np.arange(levels), channels), "probability": probs.T.ravel(),
                                     "channel": np.repeat(names, levels)})
            yield image, dist
            time.sleep(FRAME_S)

    with gr.Blocks() as demo:
        go = gr.Button("go", elem_id="go")
        live = gr.Image(elem_id="live", format="png")
        if variant.startswith("plot"):
            dist = gr.BarPlot(x="level", y="probability", color="channel", x_bin=1, elem_id="dist")
        else:
            dist = gr.Image(elem_id="dist", format="png")
        go.click(stream, None, [live, dist], show_progress="hidden")
    return demo.queue()


def measure(variant: str, levels: int, channels: int, frames: int, browser) -> dict:
    demo = stream_app(variant, levels, channels, frames)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#go")
        page.evaluate(OBSERVE)
        page.click("#go")
        page.wait_for_timeout(frames * FRAME_S * 1000 + 4000)
        shown, long = np.unique(np.round(page.evaluate("window.shown"))), page.evaluate("window.long")
        page.close()
    finally:
        demo.close()
    gaps = np.diff(shown) if len(shown) > 1 else np.array([np.nan])
    return {"distribution": f"{levels} x {channels}", "variant": variant, "images shown": len(shown),
            "of": frames, "gap median ms": round(float(np.median(gaps))), "gap p95 ms": round(float(np.percentile(gaps, 95))),
            "gap max ms": round(float(gaps.max())), "long tasks": len(long), "long tasks ms": round(sum(long))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"], headless=True)
        rows = [measure(variant, levels, channels, args.frames, browser)
                for levels, channels in ((2, 1), (256, 1), (256, 3)) for variant in VARIANTS]
        browser.close()
    header = list(rows[0])
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in header) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
