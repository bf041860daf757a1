"""The demo's limits and where its files are (documented in the README)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = REPO_ROOT / "assets"
MAX_SAMPLES = 16  # Generate: images per request
MAX_COMPLETIONS = 8  # Complete: completions per request
MAX_PARTICLES = 16  # Complete: SMC particles per completion
MAX_TEMPERATURE = 10.0
# Sampling work of a request, in pixel samples: images (x particles) x pixels x channels. The costliest model here
# (CIFAR-10 PixelCNN, 256 levels) needs ~0.08 ms of one CPU core per pixel sample at batch 128, plus ~1 ms per pixel.
SAMPLING_SLOTS = 3  # concurrent Complete/Upscale/Compress requests (app.py)
GENERATE_WORKERS = 2  # threads that run Generate requests, batched per model (one per vCPU of a free Space)
GENERATE_SLOTS = 64  # concurrent Generate streams (app.py): they replay recordings, the workers do the sampling
QUEUE_SIZE = 96  # requests Gradio queues before it answers "queue full"
ANALYSIS_SLOTS = 2  # concurrent Inspect analyses, all their events together (app.py): each may decode a large upload
LONG_WORK = 100_000  # above this a request is "long": one at a time, so one long job cannot starve short ones
MAX_WORK = 400_000  # above this a request is refused (the largest settings on a 32x32 RGB model need 393,216)
MAX_PACE_S = 20.0  # longest requested animation
MAX_UPLOAD_BYTES = 20 * 2**20  # largest upload read (app.py gives Gradio the same limit)
MAX_UPLOAD_PIXELS = 25_000_000  # 5000 x 5000: larger uploads are refused before decoding
MIN_SIDE = 4  # smallest accepted upload side, in pixels
