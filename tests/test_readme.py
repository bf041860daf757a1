"""The README's library example runs as written, from the repository root, on a shipped checkpoint."""

import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def test_library_example_runs_as_written(monkeypatch):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Library"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code, "no python block under ## Library"
    if not (REPO / "checkpoints" / "binarized-mnist-row-lstm" / "model.safetensors").is_file():
        pytest.skip("the shipped checkpoint is missing")
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny steps: one thread is fastest, most of all on a busy machine
    try:
        exec(compile(code.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    finally:
        torch.set_num_threads(threads)
    assert tuple(namespace["samples"].shape) == (4, 1, 28, 28) and tuple(namespace["filled"].shape) == (4, 1, 28, 28)
    img, hole, filled = namespace["img"], namespace["hole"], namespace["filled"]
    assert (filled[:, :, ~hole] == img[:, ~hole]).all()  # the known pixels are kept
    assert namespace["notes"] and tuple(namespace["logits"].shape) == (2, 256, 3, 32, 32)
    assert namespace["nats"].shape == (1,) and namespace["bits"].shape == (2,)
