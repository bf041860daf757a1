"""Does "pick a class" give the class? A small independent classifier per data set, and the on-class rate.

    python -m pixelrnn.classify train --dataset mnist          # -> checkpoints/classifiers/mnist (test accuracy)
    python -m pixelrnn.classify rate checkpoints/NAME          # on-class rate of a class-conditional checkpoint

The on-class rate of a class-conditional model: draw `per_class` samples of every class at temperature 1 and
count how many the classifier assigns to the class they were drawn for (per class and overall; a sample flatter
than every training image, such as a blank, is assigned to none). The classifier
is trained here on the training split only and never sees samples; its test accuracy bounds what the rate can
show. `--update` writes the rate into the checkpoint's metrics.json and card, and on_class.png beside them: each
class's first samples, framed by what the classifier read in them, so that a reader can judge the reading.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from pixelrnn.card import write_model_card
from pixelrnn.checkpoints import ON_CLASS_SHEET, CheckpointError, load_folder, read_json, read_weights
from pixelrnn.data import DATASETS, DEFAULT_DATA_DIR, load_split
from pixelrnn.hub import CHECKPOINTS_DIR
from pixelrnn.images import tile, to_rgb, upscale
from pixelrnn.model import Model, MultiScalePixelRNN, scale_pixels
from pixelrnn.sampling import sample

CLASSIFIERS_DIR = CHECKPOINTS_DIR / "classifiers"
WIDTH = {"mnist": 16, "cifar10": 32}  # the first conv block's channels: enough for ~99% on MNIST; CIFAR needs more
ON_CLASS_SAMPLES = 50  # per class
NO_CLASS = -1  # what `predict` reads in an image flatter than any training image (a blank is no digit)
Z_95 = 1.959964  # the standard normal's 97.5% quantile: two-sided 95% intervals
SHEET_COLUMNS = 10
HIT_RGB, MISS_RGB, NONE_RGB = (22, 163, 74), (220, 38, 38), (156, 163, 175)  # green, red, grey frames


class Classifier(nn.Module):
    """A small CNN on integer levels (B, C, H, W): three conv blocks (width, 2 width, 4 width channels), global
    pooling, a linear layer. `min_contrast`: the flattest training image's `contrast`; `predict` reads flatter
    images as NO_CLASS, since a CNN trained on digits confidently calls a blank image a 1."""

    def __init__(self, channels: int, levels: int, num_classes: int = 10, width: int = 32, min_contrast: float = 0.0):
        super().__init__()
        self.channels, self.levels, self.num_classes, self.width = channels, levels, num_classes, width
        self.min_contrast = min_contrast
        blocks, features = [], channels
        for k in range(3):
            out = width * 2**k
            blocks += [nn.Conv2d(features, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.Conv2d(out, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            features = out
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3))
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) levels -> class logits (B, num_classes)."""
        return self.head(self.body(scale_pixels(x, self.levels)))

    def config(self) -> dict:
        return {"channels": self.channels, "levels": self.levels, "num_classes": self.num_classes, "width": self.width,
                "min_contrast": self.min_contrast}


def contrast(images: Tensor, levels: int) -> Tensor:
    """The standard deviation of each image's pixels on a 0..1 scale, (N,): 0 for a blank image."""
    return (images.float() / (levels - 1)).flatten(1).std(1)


@torch.no_grad()
def predict(classifier: Classifier, images: Tensor, batch_size: int = 500) -> Tensor:
    """-> the most likely class of each image, (N,); NO_CLASS for an image flatter than every training image."""
    classifier.eval()
    labels = torch.cat([classifier(images[k : k + batch_size]).argmax(1) for k in range(0, len(images), batch_size)])
    return labels.masked_fill(contrast(images, classifier.levels) < classifier.min_contrast, NO_CLASS)


def train_classifier(dataset: str, data_dir: Path, epochs: float, batch_size: int = 64, lr: float = 2e-3,
                     seed: int = 0, progress: bool = True) -> tuple[Classifier, float]:
    """Train on the training split (with random shifts; flips too for CIFAR-10) -> (classifier, test accuracy)."""
    info = DATASETS[dataset]
    x, y = load_split(dataset, "train", data_dir)
    test_x, test_y = load_split(dataset, "test", data_dir)
    torch.manual_seed(seed)
    min_contrast = contrast(x, info.levels).min().item()
    classifier = Classifier(info.channels, info.levels, info.num_classes, WIDTH[dataset], min_contrast)
    steps = int(epochs * len(x) / batch_size)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    classifier.train()
    for _ in tqdm(range(steps), desc=f"classifier ({dataset})", disable=not progress):
        index = torch.randint(len(x), (batch_size,))
        batch = augment(x[index].long(), flips=dataset == "cifar10")
        loss = F.cross_entropy(classifier(batch), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    accuracy = (predict(classifier, test_x.long()) == test_y).float().mean().item()
    return classifier.eval(), accuracy


def augment(x: Tensor, flips: bool) -> Tensor:
    """Random shifts of up to 2 pixels (zero padding), and left-right flips when `flips`."""
    padded = F.pad(x, (2, 2, 2, 2))
    dy, dx = (int(v) for v in torch.randint(0, 5, (2,)))
    x = padded[..., dy : dy + x.shape[2], dx : dx + x.shape[3]]
    if flips:
        x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(-1), x)
    return x


def save_classifier(classifier: Classifier, folder: Path, metrics: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(classifier.config(), indent=1))
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))


def load_classifier(folder: Path) -> tuple[Classifier, dict]:
    """-> (classifier in eval mode, its metrics.json); safetensors only, every tensor matched; CheckpointError
    when the folder does not hold one."""
    try:
        classifier = Classifier(**read_json(folder / "config.json"))
        classifier.load_state_dict(read_weights(folder / "model.safetensors"), strict=True)
    except (TypeError, ValueError, RuntimeError) as err:  # CheckpointError is a ValueError
        raise CheckpointError(f"{folder}: not a classifier folder: {err}") from err
    return classifier.eval(), read_json(folder / "metrics.json")


def wilson_interval(hits: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion hits / n (95% by default): unlike p +- z sqrt(p(1-p)/n), it stays
    inside [0, 1] and is not empty at 0 or n hits."""
    p, shrink = hits / n, 1 + z * z / n
    centre = (p + z * z / (2 * n)) / shrink
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / shrink
    return max(0.0, centre - half), min(1.0, centre + half)


def on_class_rate(model: Model, classifier: Classifier, per_class: int = ON_CLASS_SAMPLES, temperature: float = 1.0,
                  seed: int = 0, batch: int = 100, sheet: Path | None = None) -> dict:
    """Sample `per_class` images of every class; -> {"rate": overall fraction the classifier puts in the requested
    class, "interval": its 95% Wilson interval [low, high], "per_class": [fraction per class], "samples_per_class",
    "temperature", "seed"}. `sheet`: also write the `reading_sheet` of the samples there (a PNG)."""
    num_classes = (model.small if isinstance(model, MultiScalePixelRNN) else model).num_classes
    if not num_classes:
        raise ValueError("the model is not class-conditional")
    if per_class < 1:
        raise ValueError(f"samples per class must be at least 1, got {per_class}")
    requested = torch.arange(num_classes).repeat_interleave(per_class)
    images, readings = [], []
    for k in tqdm(range(0, len(requested), batch), desc="on-class samples", leave=False):
        labels = requested[k : k + batch]
        images.append(sample(model, len(labels), y=labels, temperature=temperature, seed=seed + k).cpu())
        readings.append(predict(classifier, images[-1]))
    read = torch.cat(readings)  # (classes * per_class,) the class read in each sample, NO_CLASS for a blank
    if sheet is not None:
        reading_sheet(torch.cat(images), requested, read, classifier.levels).save(sheet)
    hit = read == requested
    per = hit.float().view(num_classes, per_class).mean(1)
    interval = [round(v, 4) for v in wilson_interval(int(hit.sum()), len(hit))]
    return {"rate": per.mean().item(), "interval": interval, "per_class": [round(v, 4) for v in per.tolist()],
            "samples_per_class": per_class, "temperature": temperature, "seed": seed}


def reading_sheet(images: Tensor, requested: Tensor, read: Tensor, levels: int, columns: int = SHEET_COLUMNS,
                  scale: int = 2) -> Image.Image:
    """A row per class of its first `columns` samples (images (N, C, H, W) levels, drawn for `requested` (N,),
    read as `read` (N,); every class drawn equally often), each framed by the reading: green the requested
    class, red another, grey none (a blank)."""
    classes = requested.unique(sorted=True)
    columns = min(columns, len(requested) // len(classes))
    frame = scale + 1
    cells = []
    for label in classes.tolist():
        picked = (requested == label).nonzero().flatten()[:columns]
        for image, reading in zip(to_rgb(images[picked].numpy(), levels), read[picked].tolist(), strict=True):
            image = upscale(image, scale)
            cell = np.empty((image.shape[0] + 2 * frame, image.shape[1] + 2 * frame, 3), np.uint8)
            cell[:] = HIT_RGB if reading == label else NONE_RGB if reading == NO_CLASS else MISS_RGB
            cell[frame:-frame, frame:-frame] = image
            cells.append(cell)
    return Image.fromarray(tile(cells, columns))


def measure_on_class(model: Model, dataset: str, classifiers: Path = CLASSIFIERS_DIR,
                     per_class: int = ON_CLASS_SAMPLES, temperature: float = 1.0, sheet: Path | None = None) -> dict:
    """`on_class_rate` with the classifier of `dataset` (mnist, cifar10), and which classifier that was: metrics.json's
    "on_class". CheckpointError if the classifier folder does not hold one."""
    classifier, classifier_metrics = load_classifier(classifiers / dataset)
    start = time.perf_counter()
    result = on_class_rate(model, classifier, per_class, temperature, sheet=sheet)
    return {**result, "classifier": f"classifiers/{dataset}",
            "classifier_test_accuracy": classifier_metrics.get("test_accuracy"),
            "seconds": round(time.perf_counter() - start, 1)}


def describe(result: dict) -> str:
    """One line for a measured on-class rate ("on_class"): the rate, its 95% interval, samples and temperature."""
    low, high = result["interval"]
    return (f"on-class rate {result['rate']:.1%} (95% interval {low:.1%}-{high:.1%}; {result['samples_per_class']} "
            f"samples per class at temperature {result['temperature']:g})")


def rate_checkpoint(folder: Path, classifiers: Path = CLASSIFIERS_DIR, per_class: int = ON_CLASS_SAMPLES,
                    update: bool = False, temperature: float = 1.0) -> dict:
    """The on-class rate of a checkpoint folder, with the classifier of its data set; `update` writes it into
    metrics.json ("on_class"), the samples' reading sheet into on_class.png and rewrites the card (the recorded
    rate is at temperature 1)."""
    if update and temperature != 1.0:
        raise ValueError("the recorded on-class rate is at temperature 1: measure other temperatures without --update")
    metrics = read_json(folder / "metrics.json")
    dataset = str(metrics.get("dataset", ""))
    if dataset not in ("mnist", "cifar10"):
        raise ValueError(f"{folder}: on-class rates exist for class-conditional MNIST and CIFAR-10 models")
    result = measure_on_class(load_folder(folder), dataset, classifiers, per_class, temperature,
                              sheet=folder / ON_CLASS_SHEET if update else None)
    if update:
        (folder / "metrics.json").write_text(json.dumps({**metrics, "on_class": result}, indent=1))
        write_model_card(folder)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train the classifier of a data set on its training split")
    tr.add_argument("--dataset", choices=("mnist", "cifar10"), required=True)
    tr.add_argument("--epochs", type=float, default=2.0)
    tr.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    tr.add_argument("--out", type=Path, help="default: checkpoints/classifiers/DATASET")
    rate = sub.add_parser("rate", help="on-class rate of class-conditional checkpoints")
    rate.add_argument("folders", nargs="+", type=Path)
    rate.add_argument("--per-class", type=int, default=ON_CLASS_SAMPLES)
    rate.add_argument("--classifiers", type=Path, default=CLASSIFIERS_DIR)
    rate.add_argument("--temperature", type=float, default=1.0, help="sample at this temperature (not recorded)")
    rate.add_argument("--update", action="store_true", help="write the rate into metrics.json and the card")
    args = p.parse_args(argv)
    if args.command == "train":
        start = time.perf_counter()
        classifier, accuracy = train_classifier(args.dataset, args.data_dir, args.epochs)
        minutes = (time.perf_counter() - start) / 60
        out = args.out or CLASSIFIERS_DIR / args.dataset
        save_classifier(classifier, out, {"dataset": args.dataset, "test_accuracy": accuracy, "epochs": args.epochs,
                                          "test_images": len(load_split(args.dataset, "test", args.data_dir)[0]),
                                          "minutes": round(minutes, 1), "threads": torch.get_num_threads()})
        print(f"{out}: test accuracy {accuracy:.2%} after {args.epochs:g} epochs ({minutes:.1f} min)")
        return 0
    for folder in args.folders:
        try:
            result = rate_checkpoint(folder, args.classifiers, args.per_class, args.update, args.temperature)
        except ValueError as err:  # not a class-conditional MNIST / CIFAR-10 checkpoint, or --update at T != 1
            p.error(str(err))
        per = " ".join(f"{v:.0%}" for v in result["per_class"])
        print(f"{folder.name}: {describe(result)}; per class {per}; classifier test accuracy "
              f"{result['classifier_test_accuracy']:.2%}" + (" (written)" if args.update else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
