"""Re-measure checkpoints on their full test split and compare with metrics.json.

python -m pixelrnn.evaluate checkpoints/*            # prints recorded vs measured, exits 1 on a mismatch
python -m pixelrnn.evaluate checkpoints/NAME --update   # writes the measured figure into metrics.json and the card
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from pixelrnn.card import write_model_card
from pixelrnn.checkpoints import load_folder, read_json, recorded_nll
from pixelrnn.classify import CLASSIFIERS_DIR, ON_CLASS_SAMPLES, describe, rate_checkpoint
from pixelrnn.data import DATASETS, DEFAULT_DATA_DIR, binarize, load_split
from pixelrnn.model import Model, MultiScalePixelRNN, bits_per_dim
from pixelrnn.training import TEST_BINARIZATION_SEED

MAX_PER_CLASS = 1000  # a recorded on-class measurement with more samples per class is re-measured with the default


def mean_nll(model: Model, images: Tensor, labels: Tensor | None, batch_size: int, device: torch.device,
             rank: int = 0, world: int = 1, progress: bool = False) -> float:
    """Mean NLL in nats per image over `images`, in float32 (no autocast), sharded across processes."""
    return sharded_means(lambda x, y: -model.log_prob(x, y)[:, None], 1, model, images, labels, batch_size, device,
                         rank, world, progress)[0]


def class_scores(model: Model, images: Tensor, labels: Tensor, batch_size: int, device: torch.device,
                 rank: int = 0, world: int = 1) -> dict[str, float]:
    """A class-conditional model's likelihoods of labelled images under every class (one pass each), by Bayes' rule
    under a uniform prior -> means per image of "nll" -log p(x | y) and "class_nll" -log p(y | x) in nats, and
    "class_accuracy": how often the posterior's most likely class is y. float32, sharded across processes."""
    classes = model.config.num_classes

    def scores(x: Tensor, y: Tensor) -> Tensor:  # (B, 3)
        every = torch.arange(classes, device=x.device).repeat(len(x))  # (B * classes,)
        log_px = model.log_prob(x.repeat_interleave(classes, 0), every).view(len(x), classes)  # (B, classes)
        log_py = log_px.gather(1, y[:, None])[:, 0]  # (B,): the labelled class
        hit = (log_px.argmax(1) == y).double()
        return torch.stack([-log_py, torch.logsumexp(log_px, 1) - log_py, hit], 1)

    means = sharded_means(scores, 3, model, images, labels, batch_size, device, rank, world)
    return dict(zip(("nll", "class_nll", "class_accuracy"), means))


@torch.no_grad()
def sharded_means(scores: Callable[[Tensor, Tensor | None], Tensor], columns: int, model: Model, images: Tensor,
                  labels: Tensor | None, batch_size: int, device: torch.device, rank: int = 0, world: int = 1,
                  progress: bool = False) -> list[float]:
    """Means over `images` of the `columns` columns of scores(x, y) -> (B, columns), in float32 in eval mode,
    sharded across processes."""
    was_training = model.training
    model.eval()
    total = torch.zeros(columns + 1, dtype=torch.float64, device=device)  # [sums of the columns, count]
    shard = range(rank * batch_size, len(images), world * batch_size)
    for start in tqdm(shard, desc="eval", leave=False, disable=not progress):
        x = images[start : start + batch_size].to(device)
        y = None if labels is None else labels[start : start + batch_size].to(device)
        total[:-1] += scores(x, y).double().sum(0)
        total[-1] += len(x)
    if world > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return (total[:-1] / total[-1]).tolist()


def test_nll(model: Model, dataset: str, data_dir: Path, batch_size: int = 500) -> tuple[float, int]:
    """-> (mean NLL in nats per image on the whole test split, number of test images)."""
    base = dataset.removesuffix("_dynamic_binarized")
    x, y = load_split(base, "test", data_dir)
    if dataset.endswith("_dynamic_binarized"):
        x = binarize(x, torch.Generator().manual_seed(TEST_BINARIZATION_SEED))
    single = model.small if isinstance(model, MultiScalePixelRNN) else model
    labels = y if single.num_classes else None
    return mean_nll(model, x, labels, batch_size, torch.device("cpu")), len(x)


def on_class(folder: Path, recorded: dict | None, update: bool, classifiers: Path) -> bool:
    """Re-measure a checkpoint's on-class rate (as many samples per class as recorded); print it beside the
    recorded one -> whether they agree."""
    recorded = recorded if isinstance(recorded, dict) else {}
    per_class = recorded.get("samples_per_class")
    per_class = per_class if isinstance(per_class, int) and 0 < per_class <= MAX_PER_CLASS else ON_CLASS_SAMPLES
    measured = rate_checkpoint(folder, classifiers, per_class, update=update)
    before = recorded.get("rate")
    same = before is not None and math.isclose(measured["rate"], before, abs_tol=1e-9)
    print(f"{folder.name}: {describe(measured)}; "
          f"recorded {before} ({'equal' if same else 'updated' if update else 'DIFFERENT'})")
    return same or update


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--update", action="store_true", help="write the measured figures into metrics.json and the card")
    p.add_argument("--on-class", action="store_true", help="class-conditional checkpoints: also re-measure the "
                   "on-class rate (pixelrnn.classify), equal to the recorded one for the same samples")
    p.add_argument("--classifiers", type=Path, default=CLASSIFIERS_DIR, help="folder of the classifiers (one per "
                   "data set)")
    args = p.parse_args(argv)
    mismatches = 0
    for folder in args.folders:
        metrics = read_json(folder / "metrics.json")
        dataset = metrics.get("dataset")
        if dataset is None or dataset.removesuffix("_dynamic_binarized") not in DATASETS:
            print(f"{folder}: no known dataset in metrics.json, skipped")
            continue
        nats, images = test_nll(load_folder(folder), dataset, args.data_dir)
        info = DATASETS[dataset.removesuffix("_dynamic_binarized")]
        dims = info.channels * info.height * info.width
        recorded, unit = recorded_nll(metrics, "test")
        value = nats if unit == "nats" else bits_per_dim(nats, dims)
        same = recorded is not None and math.isclose(value, recorded, rel_tol=1e-4)
        mismatches += not same and not args.update
        print(f"{folder.name}: measured {value:.4f} {unit} on {images} test images; recorded {recorded} "
              f"({'equal' if same else 'updated' if args.update else 'DIFFERENT'})")
        if args.update:
            metrics.update({"test_nll_nats": nats, "test_bits_per_dim": bits_per_dim(nats, dims), "test_images": images})
            (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
            write_model_card(folder)  # the card quotes the figure
        if args.on_class and info.num_classes and (metrics.get("config") or {}).get("conditional"):
            mismatches += not on_class(folder, metrics.get("on_class"), args.update, args.classifiers)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
