"""Draw samples from a checkpoint into a PNG grid: `python -m pixelrnn.generate CHECKPOINT --out samples.png`.

CHECKPOINT is anything `pixelrnn.load` resolves (a checkpoints/ name, a folder, a Hub repo).
Class-conditional models get one row per class unless --label is given.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from pixelrnn.hub import load
from pixelrnn.images import tile, to_rgb, upscale
from pixelrnn.model import MultiScalePixelRNN
from pixelrnn.sampling import sample_steps

WHITE = (255, 255, 255)


def image_grid(images: Tensor, levels: int, columns: int, scale: int = 2, gap: int = 2) -> Image.Image:
    """(n, C, H, W) integer levels -> one RGB PIL image, `columns` per row, nearest-upscaled, on white."""
    cells = [upscale(image, scale) for image in to_rgb(images.cpu().numpy(), levels)]
    border = gap * scale
    grid = np.pad(tile(cells, columns, border, WHITE), ((border, border), (border, border), (0, 0)),
                  constant_values=255)
    return Image.fromarray(grid)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, default=16, help="samples (per class for conditional models)")
    p.add_argument("--label", type=int, default=None, help="class label (conditional models)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="default: CHECKPOINT/samples.png for a folder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    model = load(args.checkpoint, device=args.device)
    large = model.large if isinstance(model, MultiScalePixelRNN) else model
    labels = [None] if large.num_classes is None else [args.label] if args.label is not None else \
        list(range(large.num_classes))
    total = large.height * large.width  # progress records: one per pixel, the small image's first
    if isinstance(model, MultiScalePixelRNN):
        total += model.small.height * model.small.width
    images = []
    for label in labels:
        steps = sample_steps(model, args.n, y=label, temperature=args.temperature, seed=args.seed, every=1)
        for step in tqdm(steps, total=total, desc=f"class {label}" if label is not None else "sampling"):
            pass
        images.append(step.image)
    out = args.out or Path(args.checkpoint) / "samples.png"
    image_grid(torch.cat(images), large.levels, columns=args.n if len(labels) > 1 else math.ceil(args.n**0.5)).save(out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
