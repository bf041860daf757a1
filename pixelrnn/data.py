"""Data sets as integer tensors (N, C, H, W), from the .npz files of ../shared/data (SOURCES.md there).

binarized_mnist.npz  train/valid/test, np.packbits along the last axis (Larochelle & Murray split)
mnist.npz            x_train, y_train, x_test, y_test (keras layout)
cifar10_train_{a,b,c,d}.npz, cifar10_test.npz   x_* NHWC uint8, y_* labels
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEFAULT_DATA_DIR = Path(os.environ.get("PIXELRNN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CIFAR_TRAIN_PARTS = ("a", "b", "c", "d")


@dataclass(frozen=True)
class DatasetInfo:
    channels: int
    levels: int
    height: int
    width: int
    num_classes: int | None
    splits: tuple[str, ...]


DATASETS = {
    "binarized_mnist": DatasetInfo(1, 2, 28, 28, None, ("train", "valid", "test")),
    "mnist": DatasetInfo(1, 256, 28, 28, 10, ("train", "test")),
    "cifar10": DatasetInfo(3, 256, 32, 32, 10, ("train", "test")),
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_CLASSES = tuple(str(d) for d in range(10))


# file -> its layout, for `python -m pixelrnn.data --check` and the error of a missing file
FILES = {
    "binarized_mnist.npz": "train (50000, 28, 4), valid (10000, 28, 4), test (10000, 28, 4) uint8: the binarized "
                           "MNIST of Larochelle & Murray (2011), np.packbits along the last axis",
    "mnist.npz": "x_train (60000, 28, 28), y_train (60000,), x_test (10000, 28, 28), y_test (10000,) uint8: the "
                 "layout of Keras' mnist.npz",
    **{f"cifar10_train_{p}.npz": f"x_train (12500, 32, 32, 3), y_train (12500,) uint8: CIFAR-10 training images "
                                 f"{12500 * k:,}..{12500 * (k + 1) - 1:,}, NHWC" for k, p in enumerate(CIFAR_TRAIN_PARTS)},
    "cifar10_test.npz": "x_test (N, 32, 32, 3), y_test (N,) uint8: CIFAR-10 test images 0..N-1, NHWC",
}


def _open(data_dir: Path, filename: str, dataset: str):
    path = Path(data_dir) / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset}: expected {filename} at {path} ({FILES.get(filename, 'see the README')}). Point --data-dir "
            f"(or PIXELRNN_DATA) at the folder that holds it; `python -m pixelrnn.data --check` lists what is found."
        )
    return np.load(path, allow_pickle=False)


def check(data_dir: Path) -> list[str]:
    """One line per expected file: found (with its arrays' shapes) or missing (with the layout it needs)."""
    lines = []
    for filename, layout in FILES.items():
        path = Path(data_dir) / filename
        if not path.is_file():
            lines.append(f"missing  {filename}: {layout}")
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                shapes = ", ".join(f"{k} {z[k].shape}" for k in z.files)
            lines.append(f"found    {filename}: {shapes}")
        except (OSError, ValueError) as err:
            lines.append(f"unreadable {filename}: {err}")
    return lines


def load_split(
    dataset: str, split: str, data_dir: Path | str = DEFAULT_DATA_DIR, cifar_parts: tuple[str, ...] = CIFAR_TRAIN_PARTS
) -> tuple[Tensor, Tensor | None]:
    """-> (images uint8 (N, C, H, W), labels int64 (N,) or None)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    if split not in DATASETS[dataset].splits:
        raise ValueError(f"{dataset} has splits {DATASETS[dataset].splits}, not {split!r}")
    data_dir = Path(data_dir)
    if dataset == "binarized_mnist":
        with _open(data_dir, "binarized_mnist.npz", dataset) as z:
            images = np.unpackbits(z[split], axis=-1, count=28)[:, None]
        return torch.from_numpy(images), None
    if dataset == "mnist":
        with _open(data_dir, "mnist.npz", dataset) as z:
            images, labels = z[f"x_{split}"][:, None], z[f"y_{split}"]
        return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    files = [f"cifar10_train_{p}.npz" for p in cifar_parts] if split == "train" else ["cifar10_test.npz"]
    images, labels = [], []
    for filename in files:
        with _open(data_dir, filename, dataset) as z:
            images.append(z[f"x_{split}"].transpose(0, 3, 1, 2))
            labels.append(z[f"y_{split}"].astype(np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def binarize(images: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
    """Dynamic binarization of 8-bit images: each pixel is 1 with probability value / 255 (255 always, 0 never).

    noise: uniform numbers in [0, 1) of the images' shape; drawn from `generator` when not given."""
    if noise is None:
        noise = torch.rand(images.shape, generator=generator, device=images.device)
    return (noise * 255 < images).to(torch.uint8)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Which data set files are where: python -m pixelrnn.data --check")
    p.add_argument("--check", action="store_true", help="list the expected .npz files, found or missing")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: $PIXELRNN_DATA or ../shared/data")
    args = p.parse_args(argv)
    print(f"data folder: {args.data_dir} (set with --data-dir or PIXELRNN_DATA)")
    lines = check(args.data_dir)
    print("\n".join(lines))
    return 0 if all(line.startswith("found") for line in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
