"""The GPU session script, rehearsed end to end on the CPU at tiny sizes: the day a GPU is lent (15 minutes), it
must work the first time."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import write_fixture_data

import pixelrnn

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"mnist": ["binarized-mnist-diagonal-bilstm", "binarized-mnist-row-lstm", "binarized-mnist-pixelcnn",
                  "binarized-mnist-multiscale-row-lstm", "mnist-row-lstm-conditional-hybrid", "mnist-row-lstm-conditional-maps"],
        "cifar": ["cifar10-row-lstm", "cifar10-multiscale-row-lstm"]}


def test_both_stages_write_loadable_finished_checkpoints(tmp_path):
    (tmp_path / "data").mkdir()
    write_fixture_data(tmp_path / "data")
    env = {**os.environ, "REHEARSE": "1", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    for stage, names in RUNS.items():
        done = subprocess.run(["bash", "configs/gpu/session.sh", stage, str(tmp_path / "data")], check=False, cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        for name in names:
            folder = tmp_path / "out" / name
            config = json.loads((ROOT / "configs" / "gpu" / f"{name}.json").read_text())
            model = pixelrnn.load(str(folder))  # strict: config and weights agree
            assert model.config.arch == config["arch"] and model.config.factor == config.get("factor")
            assert model.config.class_maps == config.get("class_maps")
            metrics = json.loads((folder / "metrics.json").read_text())
            assert metrics["finished"] and math.isfinite(metrics["test_nll_nats"])
            assert metrics["selected"]["class_weight"] == config.get("class_weight", 0.0)  # by the run's objective
            assert (folder / "README.md").is_file() and not (folder / "training_state.safetensors").exists()


DEVICE_TREE_BYTES = 64 * 2**20  # the device machine takes at most 64 MiB of working tree a call, carried data included
CIFAR_CALL_DATA_BYTES = 35_360_059 + 2_876_396  # the largest CIFAR-10 training quarter and the test file


def test_the_tracked_files_leave_room_for_the_cifar_calls_data():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False, timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = sum((ROOT / name).stat().st_size for name in listed.stdout.decode().split("\0")
                  if name and (ROOT / name).is_file())
    assert tracked + CIFAR_CALL_DATA_BYTES <= DEVICE_TREE_BYTES, (
        f"tracked files {tracked / 2**20:.1f} MiB: with the CIFAR-10 call's data they exceed the device's 64 MiB "
        "(ship finished runs without their training state)")
