import contextlib
import os
import re
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import torch

import pixelrnn
from pixelrnn.ui.inspect_tab import TRUE_ORANGE

# the app compiles a model's sampler in the background on its first run: its tests sample with the cached sampler
# (tests/test_batching.py turns the compiler on)
os.environ.setdefault("PIXELRNN_COMPILE", "0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def fit(model, images, steps=150, lr=2e-2, y=None):
    """Train `model` on a tiny fixed set of integer images (N, C, H, W) with Adam; returns it in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = -model.log_prob(images, y).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def save_tiny_checkpoints(root: Path, rgb: bool = True, multiscale: bool = False) -> Path:
    """Tiny untrained checkpoints under root: binarized 1x28x28 ("tiny-bin"), class-conditional RGB 3x32x32
    ("tiny-rgb") and a Multi-Scale binarized 1x28x28 ("tiny-ms")."""
    torch.manual_seed(0)
    pixelrnn.build_model("row_lstm", 1, 2, 28, 28, hidden=4, layers=1).save_pretrained(root / "tiny-bin")
    if multiscale:
        pixelrnn.build_model("pixelcnn", 1, 2, 28, 28, hidden=4, layers=1, factor=2).save_pretrained(root / "tiny-ms")
    if rgb:
        pixelrnn.build_model("pixelcnn", 3, 256, 32, 32, num_classes=10, hidden=6, layers=1).save_pretrained(
            root / "tiny-rgb")
        (root / "tiny-rgb" / "metrics.json").write_text(
            '{"dataset": "cifar10", "arch": "pixelcnn", "unit": "bits/dim", "test_bits_per_dim": 5.5, '
            '"wall_time_s": 30, "device": "cpu"}')
    return root


@contextlib.contextmanager
def running_app(checkpoints: Path, hub_models: Iterable[str] = ()) -> Iterator[str]:
    """app.build_demo() on the given checkpoints (and Hub repo ids), served on a free 127.0.0.1 port: yields its URL."""
    import app

    demo = app.build_demo(checkpoints, hub_models=list(hub_models), device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                **app.launch_kwargs())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


def chart_bars(html: str) -> tuple[tuple[int, int], list[list[tuple[int, float, bool]]]]:
    """The Inspect chart's (row, col) and, per channel, its bars (level, probability, is the true value)."""
    where = re.search(r'data-row="(\d+)" data-col="(\d+)"', html)
    channels = []
    for figure in html.split('<figure')[1:]:
        bars = re.findall(r'<rect data-level="(\d+)" data-p="([^"]+)"[^>]* fill="([^"]+)"', figure)
        channels.append([(int(v), float(p), fill == TRUE_ORANGE) for v, p, fill in bars])
    return (int(where[1]), int(where[2])), channels
