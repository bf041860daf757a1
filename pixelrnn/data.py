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


def _open(data_dir: Path, filename: str, dataset: str):
    path = Path(data_dir) / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset}: expected {filename} at {path}. Point --data-dir (or PIXELRNN_DATA) at the folder "
            f"holding the .npz files described in ../shared/data/SOURCES.md."
        )
    return np.load(path, allow_pickle=False)


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
