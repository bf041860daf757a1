"""The Gradio demo's logic (app.py holds only the wiring), one concern per module.

Everything here is a plain function or a small class that can be tested without a server. User mistakes raise
`gr.Error` with a sentence meant for a person.

- `settings`: the demo's limits and where its files are;
- `errors`: user-facing errors without server paths; returning freed memory;
- `uploads`: reading uploads safely, decoding images, converting them to a model's format, painted masks;
- `params`: parsing the endpoints' parameters;
- `pictures`: upscaled images, distributions, heat maps;  `streaming`: frame throttling and pacing;
- `registry`: local and Hub models, loaded on first use;  `cards`: likelihood analyses, model cards;
- `batching`: Generate requests for a model sampled together in batched runs, replayed at each visitor's pace;
- `base`, `sampling`, `inspect_tab`, `compress_tab`, `computation_tab`, `studio`: the endpoints, one object per tab
  over a shared `Core`, held by `Studio`.
"""

# the modules, for tests and tools: ui.pictures.render_distribution, ui.params.parse_int, ...
from pixelrnn.ui import (  # noqa: F401
    base,
    cards,
    computation_tab,
    errors,
    inspect_tab,
    params,
    pictures,
    registry,
    settings,
    streaming,
    uploads,
)
from pixelrnn.ui.cards import models_table
from pixelrnn.ui.errors import quiet_rejections
from pixelrnn.ui.params import AUTO_CLASS, MODES
from pixelrnn.ui.registry import Registry
from pixelrnn.ui.settings import (
    ANALYSIS_SLOTS,
    ASSETS_DIR,
    GENERATE_SLOTS,
    MAX_COMPLETIONS,
    MAX_PARTICLES,
    MAX_SAMPLES,
    MAX_UPLOAD_BYTES,
    QUEUE_SIZE,
    SAMPLING_SLOTS,
)
from pixelrnn.ui.studio import Studio, clear_js, example_images, model_changed, settle, stopped

__all__ = [
    "ANALYSIS_SLOTS",
    "ASSETS_DIR",
    "AUTO_CLASS",
    "GENERATE_SLOTS",
    "MAX_COMPLETIONS",
    "MAX_PARTICLES",
    "MAX_SAMPLES",
    "MAX_UPLOAD_BYTES",
    "MODES",
    "QUEUE_SIZE",
    "SAMPLING_SLOTS",
    "Registry",
    "Studio",
    "clear_js",
    "example_images",
    "model_changed",
    "models_table",
    "quiet_rejections",
    "settle",
    "stopped",
]
