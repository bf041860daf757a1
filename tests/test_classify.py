"""The on-class rate: an independent classifier per data set, and how often a class-conditional model's samples
are assigned to the class they were drawn for."""

import json
from math import comb

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import run_train, write_fixture_data

import pixelrnn
from pixelrnn import classify
from pixelrnn.data import load_split
from pixelrnn.evaluate import main as evaluate_main
from pixelrnn.images import GAP_PX


class Always(torch.nn.Module):
    """A stand-in classifier that assigns every image to one class (of 4-level images flatter than `min_contrast`:
    none)."""

    def __init__(self, label: int, min_contrast: float = 0.0):
        super().__init__()
        self.label, self.levels, self.min_contrast = label, 4, min_contrast

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((len(x),), self.label), 10).float()


def test_on_class_rate_counts_each_sample_against_the_class_it_was_drawn_for():
    model = pixelrnn.build_model("pixelcnn", 1, 4, 6, 6, num_classes=10, hidden=4, layers=1)
    result = classify.on_class_rate(model, Always(3), per_class=4)
    assert result["per_class"] == [0.0, 0.0, 0.0, 1.0] + [0.0] * 6 and abs(result["rate"] - 0.1) < 1e-6
    assert result["samples_per_class"] == 4 and result["temperature"] == 1.0
    assert result["interval"] == [round(v, 4) for v in classify.wilson_interval(4, 40)]
    # an image flatter than the classifier's floor is no class: here (a floor above any image's contrast) all are
    assert classify.on_class_rate(model, Always(3, min_contrast=1.0), per_class=4)["rate"] == 0.0


def frame_colours(sheet: Image.Image, rows: int, columns: int) -> list[list[tuple]]:
    """The corner pixel of each cell of a reading sheet: its frame's colour."""
    array = np.asarray(sheet)
    cell_h, cell_w = ((n - (k - 1) * GAP_PX) // k for n, k in ((array.shape[0], rows), (array.shape[1], columns)))
    return [[tuple(array[r * (cell_h + GAP_PX), c * (cell_w + GAP_PX)]) for c in range(columns)]
            for r in range(rows)]


def test_the_reading_sheet_frames_each_sample_by_what_the_classifier_read():
    images = torch.arange(6 * 4).view(6, 1, 2, 2) % 4  # 6 images of 4 levels, each its own
    requested, read = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 1, classify.NO_CLASS, 1, 1, 0])
    sheet = classify.reading_sheet(images, requested, read, levels=4, columns=2, scale=3)
    green, red, grey = classify.HIT_RGB, classify.MISS_RGB, classify.NONE_RGB
    assert frame_colours(sheet, 2, 2) == [[green, red], [green, green]]  # a row per class, its first 2 samples
    inside = np.asarray(sheet)[4 : 4 + 6, 4 : 4 + 6, 0]  # frame 4 px (scale + 1), the first image upscaled x3
    assert (inside == np.kron(images[0, 0].numpy() * 85, np.ones((3, 3)))).all()
    wide = classify.reading_sheet(images, requested, read, levels=4, columns=10, scale=1)  # rows stay classes
    assert frame_colours(wide, 2, 3) == [[green, red, grey], [green, green, red]]


def test_wilson_interval_is_the_textbook_one_and_covers_95_percent():
    assert classify.wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))  # not Wald's empty (0, 0)
    low, high = classify.wilson_interval(7, 30)
    assert (1 - high, 1 - low) == pytest.approx(classify.wilson_interval(23, 30))
    n, p = 50, 0.8  # exact coverage: the binomial probability that the interval holds p
    covered = sum(comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)
                  if classify.wilson_interval(k, n)[0] <= p <= classify.wilson_interval(k, n)[1])
    assert 0.94 < covered < 0.97


def test_classifier_training_rating_the_card_and_evaluate(tmp_path, capsys):
    write_fixture_data(tmp_path, n_train=64)
    classifier, accuracy = classify.train_classifier("mnist", tmp_path, epochs=2, batch_size=16, progress=False)
    assert 0.0 <= accuracy <= 1.0
    classify.save_classifier(classifier, tmp_path / "classifiers" / "mnist", {"test_accuracy": accuracy})
    loaded, metrics = classify.load_classifier(tmp_path / "classifiers" / "mnist")
    x = torch.cat([torch.randint(0, 256, (5, 1, 28, 28)), torch.zeros(1, 1, 28, 28, dtype=torch.long)])
    assert torch.equal(classify.predict(loaded, x), classify.predict(classifier, x)) and metrics["test_accuracy"] == accuracy
    # the floor: the flattest training image is read, a blank one (flatter) is not; the saved classifier keeps it
    train_x = load_split("mnist", "train", tmp_path)[0]
    assert loaded.min_contrast == classify.contrast(train_x, 256).min().item() > 0
    assert (classify.predict(loaded, train_x) != classify.NO_CLASS).all() and classify.predict(loaded, x)[-1] == classify.NO_CLASS

    run_train(tmp_path, tmp_path / "cond", "--arch", "pixelcnn", "--dataset", "mnist", "--conditional", "--max-steps", "1")
    result = classify.rate_checkpoint(tmp_path / "cond", tmp_path / "classifiers", per_class=8, update=True)  # as evaluate re-measures it
    recorded = json.loads((tmp_path / "cond" / "metrics.json").read_text())["on_class"]
    assert recorded["rate"] == result["rate"] and len(recorded["per_class"]) == 10
    card = (tmp_path / "cond" / "README.md").read_text()
    low, high = result["interval"]
    assert f"**{result['rate']:.1%}** (95% interval {low:.1%}-{high:.1%}) of samples drawn for a class" in card
    assert "Does the class show?" in card and "counts as no class" in card
    sheet = Image.open(tmp_path / "cond" / "on_class.png")  # what the rate counted, for a reader to judge
    frames = frame_colours(sheet, 10, 8)  # every sample shown: 8 per class
    assert sum(row.count(classify.HIT_RGB) for row in frames) == round(result["rate"] * 80)
    assert "![samples per class, framed by the classifier's reading](on_class.png)" in card

    cold = classify.rate_checkpoint(tmp_path / "cond", tmp_path / "classifiers", per_class=2, temperature=0.5)
    assert cold["temperature"] == 0.5 and json.loads((tmp_path / "cond" / "metrics.json").read_text())["on_class"] == recorded
    with pytest.raises(SystemExit):  # the recorded rate is at temperature 1
        classify.main(["rate", str(tmp_path / "cond"), "--classifiers", str(tmp_path / "classifiers"), "--temperature",
                       "0.5", "--update"])
    assert "temperature 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        classify.main(["rate", str(tmp_path / "cond"), "--classifiers", str(tmp_path / "classifiers"), "--per-class",
                       "0"])
    assert "at least 1" in capsys.readouterr().err

    assert evaluate_main([str(tmp_path / "cond"), "--data-dir", str(tmp_path), "--on-class",
                          "--classifiers", str(tmp_path / "classifiers")]) == 0
    assert "on-class rate" in capsys.readouterr().out
