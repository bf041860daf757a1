"""Benchmarks on the available device.

python -m pixelrnn.bench train    training images/s per architecture at MNIST and CIFAR shapes
python -m pixelrnn.bench sample   reference vs cached sampling time per architecture, batch 1 and 64
python -m pixelrnn.bench shipped  pixelrnn.sample on the shipped checkpoints (1 MNIST sample, 4 CIFAR-10), against
                                  an older checkout (--baseline) in the same run
python -m pixelrnn.bench compress realised code length, PNG / WebP / JPEG XL, and coding time per shipped checkpoint
python -m pixelrnn.bench serve    the demo (app.py, over HTTP) against the library, 4 samples per shipped model, and
                                  24 and 40 simultaneous 1-sample visitors

Model sizes default to the paper's (Sec. 5): binarized MNIST h=16 (7 recurrent layers,
15 PixelCNN layers); CIFAR-10 h=128, 12 layers. On a CPU the reference sampler is timed
on its first --reference-steps steps and scaled to the whole image (it does the same full
forward pass at every step); the line says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import torch

import pixelrnn
from pixelrnn.model import paper_config
from pixelrnn.sampling import sample_steps
from pixelrnn.stacked import compilable
from pixelrnn.training import LogProb, TrainStep, device_name

SHAPES = {"mnist": "binarized_mnist", "cifar": "cifar10"}  # shape name -> the paper's preset (model.PRESETS)
REPO = Path(__file__).resolve().parent.parent


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


def train_images_per_s(model: pixelrnn.PixelRNN, batch: int, args: argparse.Namespace, device: torch.device,
                       bf16: bool) -> float:
    """Training images per second: the median of `args.iters` timed steps (forward, backward, clip, Adam, EMA)."""
    graph = device.type == "cuda"
    config = model.config
    channels, levels, height, width = config.channels, config.levels, config.height, config.width
    lr = torch.tensor(1e-4, device=device) if graph else 1e-4
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, capturable=graph)
    ema = [p.detach().clone() for p in model.parameters()]
    x = torch.randint(0, levels, (batch, channels, height, width), device=device)
    options = argparse.Namespace(clip=1.0, ema=0.999)
    step = TrainStep(LogProb(model), model, optimizer, ema, options, channels * height * width, x, None,
                     device, graph, bf16)
    times = []
    for _ in range(args.warmup + args.iters):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times[args.warmup :])


def bench_train(args: argparse.Namespace, device: torch.device) -> None:
    cuda = device.type == "cuda"
    precisions = [True] if cuda else [False, True] if args.bf16 else [False]  # bf16 autocast or float32
    print(f"training step (forward, backward, clip, Adam, EMA) on {device_name(device)}; "
          f"{'bf16 autocast, CUDA graph' if cuda else 'eager'}; median of {args.iters} steps")
    if args.baseline:
        print(f"baseline: {args.baseline} (same config, its own benchmark{'' if cuda else ', eager, float32'})")
    if len(precisions) > 1:
        print("bf16 rows: baseline = the float32 row above, measured just before")
    print(f"{'shape':6s} {'arch':16s} {'params':>9s} {'batch':>5s} {'precision':>9s} {'speed':>19s} {'baseline':>9s} "
          f"{'ratio':>6s} {'peak MB':>8s}")
    for shape in args.shapes:
        for batch in args.batch:
            old = baseline_images_per_s(args.baseline, shape, batch, args) if args.baseline else {}
            for arch in args.archs:
                float32_speed = None
                for bf16 in precisions:
                    model = build(arch, shape, args, device)
                    if cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                    images_per_s = train_images_per_s(model, batch, args, device, bf16)
                    params = sum(p.numel() for p in model.parameters())
                    reference = float32_speed if bf16 and not cuda else old.get(arch)
                    ratio = f"{reference:9.1f} {images_per_s / reference:5.1f}x" if reference else f"{'-':>9s} {'-':>6s}"
                    print(f"{shape:6s} {arch:16s} {params:>9,d} {batch:>5d} {'bf16' if bf16 else 'float32':>9s} "
                          f"{images_per_s:>10.1f} images/s {ratio} {peak_memory_mb(device):>8.0f}", flush=True)
                    float32_speed = images_per_s
                    del model


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


SHIPPED_CASES = {"binarized-mnist-row-lstm": 1, "binarized-mnist-diagonal-bilstm": 1, "binarized-mnist-pixelcnn": 1,
                 "cifar10-pixelcnn-conditional": 4}  # checkpoint -> samples per call

# Run with PYTHONPATH set to the checkout being measured; needs only pixelrnn.sample(method=...) and
# checkpoints.load_folder, which every checkout since the codebase issue has. argv: folder, n, iters, threads, method
# -> prints the first call's seconds (compilation included) and the best of the next `iters` (the least disturbed
# run: a shared 2-core machine varies by +-15% from run to run).
TIME_SAMPLE = """
import sys, time
import torch
import pixelrnn
from pixelrnn.checkpoints import load_folder
model = load_folder(sys.argv[1])
n, iters, method = int(sys.argv[2]), int(sys.argv[3]), sys.argv[5]
torch.set_num_threads(int(sys.argv[4]))
y = None if getattr(getattr(model, "small", model), "num_classes", None) is None else 0
seconds = []
for seed in range(iters + 1):
    start = time.perf_counter()
    pixelrnn.sample(model, n, y=y, seed=seed, method=method)
    seconds.append(time.perf_counter() - start)
print(seconds[0], min(seconds[1:]))
"""


def sample_seconds(checkout: Path, folder: Path, n: int, iters: int, threads: int,
                   method: str = "cached") -> tuple[float, float]:
    """`pixelrnn.sample(n)` on a checkpoint with the code of `checkout`, in a fresh process -> (first call's
    seconds, best of the next `iters`)."""
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
    out = subprocess.run([sys.executable, "-c", TIME_SAMPLE, str(folder), str(n), str(iters), str(threads), method],
                         env=env, cwd=checkout, capture_output=True, text=True, timeout=3600, check=True).stdout
    first, best = out.split()[-2:]
    return float(first), float(best)


def bench_shipped(args: argparse.Namespace, device: torch.device) -> None:
    names, threads = args.checkpoints or list(SHIPPED_CASES), args.threads or torch.get_num_threads()
    print(f"pixelrnn.sample on the shipped checkpoints, {device_name(torch.device('cpu'))}, {threads} threads; "
          f"best of {args.iters}; baseline: {args.baseline or 'none'}")
    for name in names:
        n, folder = SHIPPED_CASES.get(name, 1), REPO / "checkpoints" / name
        before = sample_seconds(args.baseline, folder, n, args.iters, threads)[1] if args.baseline else None
        for method in args.methods:
            first, now = sample_seconds(REPO, folder, n, args.iters, threads, method)
            line = f"{name:34s} n={n} {method:8s}: {now:6.3f} s (first call {first:5.1f} s)"
            if before:
                line += f"  baseline {before:6.3f} s  {before / now:5.2f}x faster"
            print(line, flush=True)


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


@contextlib.contextmanager
def serving(env: dict[str, str] | None = None, cpus: set[int] | None = None) -> Iterator[tuple[str, int]]:
    """`python app.py` on the shipped checkpoints (plus `env`), on a free loopback port and on `cpus` (default all):
    yields (its URL, its pid)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "OMP_NUM_THREADS": "1",
                        "PIXELRNN_HUB_MODELS": "", "GRADIO_ANALYTICS_ENABLED": "False"} | (env or {})
    server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    if cpus is not None:
        os.sched_setaffinity(server.pid, cpus)  # before it starts its threads, which inherit it
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/gradio_api/info", timeout=5).status_code == 200:
                    break
            time.sleep(0.1)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def api_call(server: str, api: str, data: list, timeout: float = 30.0,
             client: httpx.Client | None = None) -> tuple[str, Any, float]:
    """POST /gradio_api/call/{api}, then read its event stream -> (last event, its data, seconds it took).

    The event is "complete" (data: the outputs) or "error" (data: the message shown to the user), also when the
    request is refused at once: HTTP 400 (the events with a validator check the request there) or 503 (the queue is
    full). `client`: an open connection pool, as a browser keeps one (a new httpx client costs ~40 ms here)."""
    if client is None:
        with httpx.Client() as new_client:
            return api_call(server, api, data, timeout, new_client)
    start = time.monotonic()
    response = client.post(f"{server}/gradio_api/call/{api}", json={"data": data}, timeout=timeout)
    if response.status_code in (400, 503):
        return "error", response.json().get("detail"), time.monotonic() - start
    response.raise_for_status()
    event_id = response.json()["event_id"]
    event, payload = None, None
    with client.stream("GET", f"{server}/gradio_api/call/{api}/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line.partition(":")[2])
    if event == "error" and isinstance(payload, dict):
        payload = payload.get("error")
    return event, payload, time.monotonic() - start


SERVE_CASES = (("binarized-mnist-row-lstm", None, 4), ("binarized-mnist-diagonal-bilstm", None, 4),
               ("cifar10-pixelcnn-conditional", "cat", 4))


def bench_serve(args: argparse.Namespace, device: torch.device) -> None:
    """Library vs demo, and simultaneous visitors. The server runs on core 0 and this process on the others while
    it is a client (a remote visitor's work is not the server's); the library is timed on core 0 too."""
    torch.set_num_threads(1)
    print(f"demo (app.py over HTTP, animation 0) vs library (pixelrnn.sample) on {device_name(torch.device('cpu'))}; "
          f"best of {args.iters}, in turns")
    with serving(cpus={0}) as (url, _):
        for name, label, n in SERVE_CASES:
            times = serve_times(url, name, label, n, args.iters)
            demo, sampler = times.pop("demo")
            print(f"{name:34s} n={n}: demo {demo:.2f} s ({sampler} sampler); library " + ", ".join(
                f"{method} {seconds:.2f} s (demo / library {demo / seconds:.2f}x)" for method, seconds in times.items()))
        for visitors in (24, 40):
            print(simultaneous_visitors(url, visitors))


def serve_times(url: str, name: str, label: str | None, n: int, iters: int) -> dict[str, Any]:
    """Seconds for n samples of a shipped model: {"demo": (seconds, its sampler), "cached": library, "compiled":
    library (a model the demo compiles)}, the best of `iters` each, taken in turns (this shared 2-core machine
    varies by +-15% from run to run; the least disturbed runs compare the work). The demo compiles its sampler in
    the background after a model's first run: it is asked until its status names it (at most ~2 minutes)."""
    cores = os.sched_getaffinity(0)
    model = pixelrnn.load(str(REPO / "checkpoints" / name))
    y = None if label is None else torch.full((n,), 3)
    methods = ("cached", "compiled") if compilable(model) else ("cached",)
    with httpx.Client() as client:  # one connection pool, as a browser keeps
        for _ in range(240 if "compiled" in methods else 1):  # the first call loads the model
            status = api_call(url, "generate", [name, label, n, 1.0, "0", 0], 300, client)[1][-1]
            if "compiled sampler" in status:
                break
            time.sleep(0.5)
        for method in methods:
            pixelrnn.sample(model, n, y=y, method=method)  # compiles
        seconds: dict[str, list[float]] = {key: [] for key in ("demo", *methods)}
        for k in range(iters):
            os.sched_setaffinity(0, {0})
            for method in methods:
                start = time.perf_counter()
                pixelrnn.sample(model, n, y=y, seed=k, method=method)
                seconds[method].append(time.perf_counter() - start)
            os.sched_setaffinity(0, (cores - {0}) or cores)
            seconds["demo"].append(api_call(url, "generate", [name, label, n, 1.0, str(k), 0], 300, client)[2])
    sampler = "compiled" if "compiled sampler" in status else "cached"
    return {key: min(values) for key, values in seconds.items()} | {"demo": (min(seconds["demo"]), sampler)}


def simultaneous_visitors(url: str, visitors: int) -> str:
    """`visitors` 1-sample MNIST requests sent at once -> a line: how many were served, latencies, refusals."""
    answers: list = [None] * visitors

    def visit(k: int) -> None:
        answers[k] = api_call(url, "generate", [SERVE_CASES[0][0], None, 1, 1.0, str(k), 0], 600)

    threads = [threading.Thread(target=visit, args=(k,), daemon=True) for k in range(visitors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = sorted(answer[2] for answer in answers)
    refused = sorted({str(answer[1])[:60] for answer in answers if answer[0] != "complete"})
    return (f"{visitors} simultaneous 1-sample requests ({SERVE_CASES[0][0]}): "
            f"{sum(answer[0] == 'complete' for answer in answers)} served, median {statistics.median(seconds):.1f} s, "
            f"slowest {seconds[-1]:.1f} s; refused: {refused or 'none'}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("train", "sample", "shipped", "compress", "serve"))
    p.add_argument("--images", type=int, default=10, help="compress: test images per checkpoint")
    p.add_argument("--checkpoints", nargs="+", default=None,
                   help="compress, shipped: these shipped checkpoints (default: all)")
    p.add_argument("--archs", nargs="+", default=list(pixelrnn.ARCHS), choices=pixelrnn.ARCHS)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--hidden", type=int, default=0, help="override the paper's h")
    p.add_argument("--layers", type=int, default=0, help="override the paper's depth")
    p.add_argument("--out-hidden", type=int, default=64)
    p.add_argument("--batch", type=int, nargs="+", default=[16], help="train: batch sizes")
    p.add_argument("--baseline", type=Path, help="train, shipped: an older checkout to measure side by side")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="sample: batch sizes")
    p.add_argument("--threads", type=int, default=0, help="shipped: torch threads (default: torch's, one per core)")
    p.add_argument("--methods", nargs="+", default=["cached"], choices=["cached", "compiled"],
                   help="shipped: samplers to time (compiled: the first call compiles)")
    p.add_argument("--bf16", action="store_true", help="train, CPU: also time bf16 autocast, against float32 (a GPU "
                   "always runs bf16)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--reference-steps", type=int, default=28, help="CPU: reference steps timed (0: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    {"train": bench_train, "sample": bench_sample, "shipped": bench_shipped, "compress": bench_compress,
     "serve": bench_serve}[args.what](args, device)


if __name__ == "__main__":
    main()
