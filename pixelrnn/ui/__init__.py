"""The Gradio demo's logic (app.py holds only the wiring), one concern per module.

Everything here is a plain function or a small class that can be tested without a server. User mistakes raise
`gr.Error` with a sentence meant for a person.

- `settings`: the demo's limits and where its files are;
- `errors`: user-facing errors without server paths; returning freed memory;
- `uploads`: reading uploads safely, decoding images, converting them to a model's format, painted masks;
- `params`: parsing the endpoints' parameters;
- `pictures`: upscaled images, distributions, heat maps;  `streaming`: frame throttling and pacing;
- `registry`: local and Hub models, loaded on first use;  `cards`: likelihood analyses, model cards;
- `base`, `sampling`, `inspect_tab`, `compress_tab`, `studio`: the endpoints, one object per tab over a shared `Core`, held by `Studio`.
"""

import gradio as gr

from pixelrnn.images import center_crop_box, quantize, tile, to_rgb, upscale
from pixelrnn.ui.cards import models_table
from pixelrnn.ui.errors import quiet_rejections
from pixelrnn.ui.inspect_tab import distribution_html
from pixelrnn.ui.params import (
    AUTO_CLASS,
    MODES,
    parse_class,
    parse_int,
    parse_mode,
    parse_pace,
    parse_seed,
    parse_temperature,
)
from pixelrnn.ui.pictures import (
    CURSOR_RGB,
    LEGEND_PX,
    PENDING_RGB,
    VIRIDIS,
    click_to_pixel,
    colormap,
    display_scale,
    grid_scale,
    inspect_scale,
    masked_original,
    render_distribution,
    render_heatmap,
    render_images,
)
from pixelrnn.ui.registry import LOAD_WAIT_S, Registry, spec_of
from pixelrnn.ui.settings import (
    ANALYSIS_SLOTS,
    ASSETS_DIR,
    MAX_COMPLETIONS,
    MAX_PARTICLES,
    MAX_SAMPLES,
    MAX_UPLOAD_BYTES,
    REPO_ROOT,
    SAMPLING_SLOTS,
)
from pixelrnn.ui.streaming import FrameGate, Pacer, with_last
from pixelrnn.ui.studio import Studio, cleared, example_images, model_changed, settle, stopped
from pixelrnn.ui.uploads import (
    ModelSpec,
    PreparedImage,
    editor_parts,
    extract_mask,
    pool_any,
    prepare_image,
)

__all__ = [
    "ANALYSIS_SLOTS",
    "ASSETS_DIR",
    "AUTO_CLASS",
    "CURSOR_RGB",
    "LEGEND_PX",
    "LOAD_WAIT_S",
    "MAX_COMPLETIONS",
    "MAX_PARTICLES",
    "MAX_SAMPLES",
    "MAX_UPLOAD_BYTES",
    "MODES",
    "PENDING_RGB",
    "REPO_ROOT",
    "SAMPLING_SLOTS",
    "VIRIDIS",
    "FrameGate",
    "ModelSpec",
    "Pacer",
    "PreparedImage",
    "Registry",
    "Studio",
    "center_crop_box",
    "cleared",
    "click_to_pixel",
    "colormap",
    "display_scale",
    "distribution_html",
    "editor_parts",
    "example_images",
    "extract_mask",
    "gr",
    "grid_scale",
    "inspect_scale",
    "masked_original",
    "model_changed",
    "models_table",
    "parse_class",
    "parse_int",
    "parse_mode",
    "parse_pace",
    "parse_seed",
    "parse_temperature",
    "pool_any",
    "prepare_image",
    "quantize",
    "quiet_rejections",
    "render_distribution",
    "render_heatmap",
    "render_images",
    "settle",
    "spec_of",
    "stopped",
    "tile",
    "to_rgb",
    "upscale",
    "with_last",
]
