"""The command-line tools run end to end on tiny models."""

import re
from pathlib import Path

from PIL import Image

import pixelrnn
from pixelrnn import bench
from pixelrnn.generate import main as sample_main


def test_bench_sample_and_train_print_their_figures(capsys):
    tiny = ["--archs", "row_lstm", "diagonal_bilstm", "--shapes", "mnist", "--hidden", "4", "--layers", "1"]
    bench.main(["sample", *tiny, "--batches", "1", "--reference-steps", "4"])
    out = capsys.readouterr().out
    assert out.count("x (reference scaled from 4 pixels)") == 2
    bench.main(["train", *tiny, "--batch", "2", "3", "--iters", "1", "--warmup", "0"])
    assert capsys.readouterr().out.count(" images/s") == 4  # 2 architectures x 2 batch sizes


def test_bench_train_on_a_cpu_times_bf16_against_float32_measured_beside_it(capsys):
    bench.main(["train", "--archs", "row_lstm", "--shapes", "mnist", "--hidden", "4", "--layers", "1", "--batch", "2",
                "--iters", "1", "--warmup", "0", "--device", "cpu", "--bf16"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("mnist")]
    assert [row[4] for row in rows] == ["float32", "bf16"]
    float32_speed, bf16_speed = float(rows[0][5]), float(rows[1][5])
    assert rows[0][7:9] == ["-", "-"] and float(rows[1][7]) == float32_speed  # the bf16 row's baseline: float32's
    assert rows[1][8].endswith("x") and abs(float(rows[1][8][:-1]) - bf16_speed / float32_speed) < 0.06  # rounded


def test_bench_train_measures_a_baseline_checkout_side_by_side(capsys):
    root = str(Path(__file__).resolve().parents[1])  # this checkout as its own baseline
    bench.main(["train", "--archs", "pixelcnn", "--shapes", "mnist", "--hidden", "4", "--layers", "1", "--batch", "2",
                "--iters", "1", "--warmup", "0", "--baseline", root])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("mnist"))
    assert re.search(r"images/s\s+[\d.]+\s+[\d.]+x", row), row


def test_sample_cli_writes_a_grid_per_class(tmp_path):
    pixelrnn.build_model("pixelcnn", 3, 256, 5, 4, num_classes=3, hidden=6, layers=1).save_pretrained(tmp_path)
    out = sample_main([str(tmp_path), "--n", "2", "--out", str(tmp_path / "grid.png")])
    grid = Image.open(out)
    assert grid.mode == "RGB" and grid.size == (2 * (2 + 2 * 6), 2 * (2 + 3 * 7))  # 2 columns x 3 classes, 2x scale


def test_bench_shipped_times_a_checkpoint_against_a_baseline_checkout(capsys):
    root = str(Path(__file__).resolve().parents[1])  # this checkout as its own baseline
    bench.main(["shipped", "--checkpoints", "binarized-mnist-row-lstm", "--iters", "1", "--baseline", root])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("binarized-mnist-row-lstm"))
    assert re.search(r"n=1 cached +: +[\d.]+ s \(first call +[\d.]+ s\) +baseline +[\d.]+ s +[\d.]+x faster", row), row
