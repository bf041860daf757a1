"""Benchmarks on the available device.

python -m pixelrnn.bench train    training images/s per architecture at MNIST and CIFAR shapes
python -m pixelrnn.bench sample   reference vs cached sampling time per architecture, batch 1 and 64

Model sizes default to the paper's (Sec. 5): binarized MNIST h=16 (7 recurrent layers,
15 PixelCNN layers); CIFAR-10 h=128, 12 layers. On a CPU the reference sampler is timed
on its first --reference-steps steps and scaled to the whole image (it does the same full
forward pass at every step); the line says so.
"""

from __future__ import annotations

import argparse
import time

import torch

import pixelrnn
from pixelrnn.model import DEFAULT_LAYERS
from pixelrnn.sampling import sample_steps
from pixelrnn.train import autocast, device_name

SHAPES = {  # name: (channels, levels, height, width, paper hidden, paper layers for recurrent models)
    "mnist": (1, 2, 28, 28, 16, 7),
    "cifar": (3, 256, 32, 32, 128, 12),
}


def build(arch: str, shape: str, args: argparse.Namespace, device: torch.device) -> pixelrnn.PixelRNN:
    channels, levels, height, width, hidden, layers = SHAPES[shape]
    if arch == "pixelcnn" and shape == "mnist":
        layers = DEFAULT_LAYERS["pixelcnn"]
    model = pixelrnn.build_model(arch, channels, levels, height, width, hidden=args.hidden or hidden,
                                 layers=args.layers or layers, out_hidden=args.out_hidden)
    return model.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(args: argparse.Namespace, device: torch.device) -> None:
    print(f"training throughput on {device_name(device)}, batch {args.batch}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}")
    for shape in args.shapes:
        for arch in args.archs:
            model = build(arch, shape, args, device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
            channels, levels, height, width, *_ = SHAPES[shape]
            x = torch.randint(0, levels, (args.batch, channels, height, width), device=device)
            times = []
            for _ in range(args.warmup + args.iters):
                sync(device)
                start = time.perf_counter()
                with autocast(device):
                    loss = -model.log_prob(x).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                sync(device)
                times.append(time.perf_counter() - start)
            per_batch = min(times[args.warmup :])
            params = sum(p.numel() for p in model.parameters())
            print(f"{shape:6s} {arch:16s} h={model.hidden:<4d} layers={len(model.layers):<3d} "
                  f"{params:>10,d} params  {args.batch / per_batch:9.1f} images/s")


def time_sampling(model: pixelrnn.PixelRNN, n: int, method: str, max_steps: int, device: torch.device) -> float:
    """Seconds for a whole image, measured over the first `max_steps` steps (0: all) and scaled."""
    total = model.height * model.width
    steps = total if not max_steps else min(max_steps, total)
    sync(device)
    start = time.perf_counter()
    for k, _ in enumerate(sample_steps(model, n, seed=0, method=method, every=1), start=1):
        if k == steps:
            break
    sync(device)
    return (time.perf_counter() - start) * total / steps


def bench_sample(args: argparse.Namespace, device: torch.device) -> None:
    print(f"sampling one full batch on {device_name(device)} (seconds; ratio = reference / cached)")
    for shape in args.shapes:
        for arch in args.archs:
            model = build(arch, shape, args, device).eval()
            for n in args.batches:
                time_sampling(model, n, "cached", 2, device)  # warm-up
                cached = time_sampling(model, n, "cached", 0, device)
                ref_steps = args.reference_steps if device.type == "cpu" else 0
                reference = time_sampling(model, n, "reference", ref_steps, device)
                note = f" (reference scaled from {ref_steps} pixels)" if ref_steps else ""
                print(f"{shape:6s} {arch:16s} batch {n:3d}: reference {reference:8.3f} s  cached {cached:7.3f} s  "
                      f"ratio {reference / cached:7.1f}x{note}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("train", "sample"))
    p.add_argument("--archs", nargs="+", default=list(pixelrnn.ARCHS), choices=pixelrnn.ARCHS)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--hidden", type=int, default=0, help="override the paper's h")
    p.add_argument("--layers", type=int, default=0, help="override the paper's depth")
    p.add_argument("--out-hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=16, help="train: batch size")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="sample: batch sizes")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--reference-steps", type=int, default=28, help="CPU: reference steps timed (0: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    (bench_train if args.what == "train" else bench_sample)(args, device)


if __name__ == "__main__":
    main()
