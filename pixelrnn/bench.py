"""Benchmarks on the available device.

python -m pixelrnn.bench train    training images/s per architecture at MNIST and CIFAR shapes
python -m pixelrnn.bench sample   reference vs cached sampling time per architecture, batch 1 and 64
python -m pixelrnn.bench compress realised code length, PNG / WebP / JPEG XL, and coding time per shipped checkpoint

Model sizes default to the paper's (Sec. 5): binarized MNIST h=16 (7 recurrent layers,
15 PixelCNN layers); CIFAR-10 h=128, 12 layers. On a CPU the reference sampler is timed
on its first --reference-steps steps and scaled to the whole image (it does the same full
forward pass at every step); the line says so.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import pixelrnn
from pixelrnn.model import paper_config
from pixelrnn.sampling import sample_steps
from pixelrnn.training import LogProb, TrainStep, device_name

SHAPES = {"mnist": "binarized_mnist", "cifar": "cifar10"}  # shape name -> the paper's preset (model.PRESETS)


def build(arch: str, shape: str, args: argparse.Namespace, device: torch.device) -> pixelrnn.PixelRNN:
    """The paper's `arch` at `shape` (`paper_config`), with the sizes the options override."""
    config = paper_config(SHAPES[shape], arch, hidden=args.hidden or None, layers=args.layers or None,
                          out_hidden=args.out_hidden)
    return pixelrnn.build_model(config).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory of the last measurement, or the process's peak RSS so far on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def baseline_images_per_s(baseline: Path, shape: str, batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Run the benchmark of an older checkout (e.g. `git worktree add /tmp/old <commit>`) on the same configs.

    -> images/s per architecture, from its printed lines.
    """
    command = [sys.executable, "-m", "pixelrnn.bench", "train", "--archs", *args.archs, "--shapes", shape,
               "--batch", str(batch), "--warmup", "1", "--iters", str(args.iters), "--device", args.device,
               "--out-hidden", str(args.out_hidden), "--hidden", str(args.hidden), "--layers", str(args.layers)]
    baseline = baseline.resolve()
    env = {**os.environ, "PYTHONPATH": str(baseline)}
    out = subprocess.run(command, cwd=baseline, env=env, capture_output=True, text=True, timeout=3600,
                         check=True).stdout
    found = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\w+\s+(\w+)\s.*?([\d.]+) images/s", out, re.MULTILINE)}
    if set(found) != set(args.archs):
        raise RuntimeError(f"the baseline benchmark printed no images/s for some architectures:\n{out}")
    return found


def bench_train(args: argparse.Namespace, device: torch.device) -> None:
    graph = device.type == "cuda"
    bf16 = device.type == "cuda"
    print(f"training step (forward, backward, clip, Adam, EMA) on {device_name(device)}; "
          f"{'bf16 autocast, CUDA graph' if graph else 'float32, eager'}; median of {args.iters} steps")
    if args.baseline:
        print(f"baseline: {args.baseline} (same config, its own benchmark, eager)")
    print(f"{'shape':6s} {'arch':16s} {'params':>9s} {'batch':>5s} {'speed':>19s} {'baseline':>9s} {'ratio':>6s} "
          f"{'peak MB':>8s}")
    for shape in args.shapes:
        for batch in args.batch:
            old = baseline_images_per_s(args.baseline, shape, batch, args) if args.baseline else {}
            for arch in args.archs:
                model = build(arch, shape, args, device)
                config = model.config
                channels, levels, height, width = config.channels, config.levels, config.height, config.width
                lr = torch.tensor(1e-4, device=device) if graph else 1e-4
                optimizer = torch.optim.Adam(model.parameters(), lr=lr, capturable=graph)
                ema = [p.detach().clone() for p in model.parameters()]
                x = torch.randint(0, levels, (batch, channels, height, width), device=device)
                options = argparse.Namespace(clip=1.0, ema=0.999)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                step = TrainStep(LogProb(model), model, optimizer, ema, options, channels * height * width, x, None,
                                 device, graph, bf16)
                times = []
                for _ in range(args.warmup + args.iters):
                    sync(device)
                    start = time.perf_counter()
                    step()
                    sync(device)
                    times.append(time.perf_counter() - start)
                images_per_s = batch / statistics.median(times[args.warmup :])
                params = sum(p.numel() for p in model.parameters())
                memory = peak_memory_mb(device)
                before = old.get(arch)
                old_text = f"{before:9.1f} {images_per_s / before:5.1f}x" if before else f"{'-':>9s} {'-':>6s}"
                print(f"{shape:6s} {arch:16s} {params:>9,d} {batch:>5d} {images_per_s:>10.1f} images/s {old_text} "
                      f"{memory:>8.0f}", flush=True)
                del step, model, optimizer, ema


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


def bench_compress(args: argparse.Namespace, device: torch.device) -> None:
    """Code the first --images test images (a fixed random pick) with every shipped checkpoint."""
    from pixelrnn.checkpoints import load_folder, read_json
    from pixelrnn.compress import baseline_sizes, decode, encode, levels_to_image, read_header
    from pixelrnn.data import binarize
    from pixelrnn.evaluate import DATASETS, load_split
    from pixelrnn.hub import CHECKPOINTS_DIR
    from pixelrnn.training import TEST_BINARIZATION_SEED

    print(f"lossless compression of {args.images} test images per checkpoint on {device_name(torch.device('cpu'))}; "
          "bits/dim, mean over the images; over: the payload (the coder's bytes) above the NLL")
    print(f"{'checkpoint':38s} {'NLL':>7s} {'payload':>8s} {'+header':>8s} {'over':>6s} {'PNG':>7s} {'WebP':>7s} "
          f"{'JXL':>7s} {'enc s':>6s} {'dec s':>6s}")
    for folder in sorted(p for p in CHECKPOINTS_DIR.iterdir() if (p / "metrics.json").is_file()):
        dataset = read_json(folder / "metrics.json").get("dataset", "")
        base = dataset.removesuffix("_dynamic_binarized")
        if base not in DATASETS or (args.checkpoints and folder.name not in args.checkpoints):
            continue
        model = load_folder(folder)
        x, y = load_split(base, "test")
        if dataset.endswith("_dynamic_binarized"):
            x = binarize(x, torch.Generator().manual_seed(TEST_BINARIZATION_SEED))
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: args.images]
        single = model.small if isinstance(model, pixelrnn.MultiScalePixelRNN) else model
        levels = model.large.levels if isinstance(model, pixelrnn.MultiScalePixelRNN) else model.levels
        dims = x[0].numel()
        sums = {"nll": 0.0, "payload": 0.0, "total": 0.0, "PNG": 0.0, "WEBP": 0.0, "JXL": 0.0, "enc": 0.0, "dec": 0.0}
        for i in pick.tolist():
            label = int(y[i]) if single.num_classes else None
            with torch.no_grad():
                nll = -model.log_prob(x[i : i + 1].long(), None if label is None else torch.tensor([label])).item()
            start = time.perf_counter()
            data = encode(model, x[i].long(), label)
            middle = time.perf_counter()
            image, _ = decode(model, data)
            end = time.perf_counter()
            if not torch.equal(image, x[i].long()):
                raise RuntimeError(f"{folder.name}: test image {i} did not round-trip")
            sizes = baseline_sizes(levels_to_image(x[i].long(), levels))
            sums["nll"] += nll / math.log(2) / dims
            sums["payload"] += 8 * len(read_header(data)["payload"]) / dims
            sums["total"] += 8 * len(data) / dims
            for fmt in ("PNG", "WEBP", "JXL"):
                sums[fmt] += 8 * sizes.get(fmt, math.nan) / dims
            sums["enc"] += middle - start
            sums["dec"] += end - middle
        m = {k: v / len(pick) for k, v in sums.items()}
        print(f"{folder.name:38s} {m['nll']:7.4f} {m['payload']:8.4f} {m['total']:8.4f} "
              f"{100 * (m['payload'] / m['nll'] - 1):5.0f}% {m['PNG']:7.4f} {m['WEBP']:7.4f} {m['JXL']:7.4f} "
              f"{m['enc']:6.2f} {m['dec']:6.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("train", "sample", "compress"))
    p.add_argument("--images", type=int, default=10, help="compress: test images per checkpoint")
    p.add_argument("--checkpoints", nargs="+", default=None, help="compress: these shipped checkpoints (default: all)")
    p.add_argument("--archs", nargs="+", default=list(pixelrnn.ARCHS), choices=pixelrnn.ARCHS)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--hidden", type=int, default=0, help="override the paper's h")
    p.add_argument("--layers", type=int, default=0, help="override the paper's depth")
    p.add_argument("--out-hidden", type=int, default=64)
    p.add_argument("--batch", type=int, nargs="+", default=[16], help="train: batch sizes")
    p.add_argument("--baseline", type=Path, help="train: an older checkout to measure side by side (its own bench)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="sample: batch sizes")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--reference-steps", type=int, default=28, help="CPU: reference steps timed (0: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    {"train": bench_train, "sample": bench_sample, "compress": bench_compress}[args.what](args, device)


if __name__ == "__main__":
    main()
