"""Train a PixelRNN: `python -m pixelrnn.train --arch diagonal_bilstm --dataset binarized_mnist --minutes 5`.

Writes OUT/config.json + model.safetensors (PyTorchModelHubMixin), metrics.json (test NLL on
the full test split in the paper's unit), samples.png, and training_state.safetensors/.json
to resume from (`--resume`). Runs under `torchrun --nproc_per_node N` with
DistributedDataParallel: each step's global batch is split across the processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pixelrnn.data import DATASETS, DEFAULT_DATA_DIR, binarize, load_split
from pixelrnn.generate import image_grid
from pixelrnn.hub import write_model_card
from pixelrnn.model import ARCHS, DEFAULT_LAYERS, Model, bits_per_dim, build_model
from pixelrnn.sampling import sample


class LogProb(torch.nn.Module):
    """forward = log p(x): DistributedDataParallel syncs gradients only through forward."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.model.log_prob(x, y)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=ARCHS, default="diagonal_bilstm")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="binarized_mnist")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with the .npz files")
    p.add_argument("--binarize", action="store_true", help="mnist: dynamic binarization (levels 2)")
    p.add_argument("--conditional", action="store_true", help="class-conditional (mnist, cifar10)")
    p.add_argument("--cifar-parts", default="abcd", help="which CIFAR-10 train quarters to load")
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training images")
    p.add_argument("--hidden", type=int, default=16, help="h: recurrent state size (layers carry 2h)")
    p.add_argument("--layers", type=int, default=None, help="default: the paper's depth for --arch")
    p.add_argument("--out-hidden", type=int, default=64)
    p.add_argument("--no-skip", action="store_true", help="no skip connections to the output")
    p.add_argument("--factor", type=int, default=0, help="Multi-Scale PixelRNN: subsampling factor (e.g. 2)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch (split across processes)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("adam", "rmsprop"), default="adam")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    p.add_argument("--epochs", type=float, default=1000.0)
    p.add_argument("--minutes", type=float, default=0.0, help="training time budget (0: none)")
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=500, help="steps between quick test evaluations")
    p.add_argument("--eval-images", type=int, default=500, help="test images per quick evaluation")
    p.add_argument("--test-limit", type=int, default=0, help="final evaluation on the first N only (0: all)")
    p.add_argument("--samples", type=int, default=16, help="samples drawn into samples.png (0: none)")
    p.add_argument("--out", type=Path, default=Path("runs/model"))
    p.add_argument("--resume", action="store_true", help="continue from OUT's training state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def model_kwargs(args: argparse.Namespace, levels: int) -> dict:
    info = DATASETS[args.dataset]
    kwargs = {"arch": args.arch, "channels": info.channels, "levels": levels, "height": info.height, "width": info.width,
                  "num_classes": info.num_classes if args.conditional else None, "hidden": args.hidden,
                  "layers": args.layers or DEFAULT_LAYERS[args.arch], "out_hidden": args.out_hidden, "skip": not args.no_skip}
    if args.factor:
        kwargs["factor"] = args.factor
    return kwargs


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@torch.no_grad()
def evaluate(model: Model, images: Tensor, labels: Tensor | None, batch_size: int, device: torch.device,
             rank: int = 0, world: int = 1, progress: bool = False) -> float:
    """Mean NLL in nats per image over `images`, sharded across processes."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of NLL, count]
    shard = range(rank * batch_size, len(images), world * batch_size)
    for start in tqdm(shard, desc="eval", leave=False, disable=not progress):
        x = images[start : start + batch_size].to(device)
        y = None if labels is None else labels[start : start + batch_size].to(device)
        with autocast(device):
            nll = -model.log_prob(x, y)
        total += torch.stack([nll.double().sum(), torch.tensor(float(len(x)), device=device)])
    if world > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU (the recurrent loops are launch-bound, not precision-bound)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def save_training_state(out: Path, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Optimizer tensors to safetensors, counters to JSON: resuming never unpickles anything."""
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, param_state in opt["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{index}.{key}"] = value.contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = float(value)
    save_file(tensors, out / "training_state.safetensors")
    (out / "training_state.json").write_text(json.dumps({**state, "optimizer_scalars": scalars,
                                                         "param_groups": opt["param_groups"]}, indent=1))


def load_training_state(out: Path, optimizer: torch.optim.Optimizer) -> dict:
    state = json.loads((out / "training_state.json").read_text())
    tensors = load_file(out / "training_state.safetensors")
    per_param: dict[int, dict] = {}
    for name, value in [*tensors.items(), *state.pop("optimizer_scalars").items()]:
        index, key = name.split(".", 1)
        per_param.setdefault(int(index), {})[key] = torch.tensor(value) if key == "step" else value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = torch.device(args.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
    is_main = rank == 0
    torch.manual_seed(args.seed)

    info = DATASETS[args.dataset]
    if args.conditional and info.num_classes is None:
        raise SystemExit(f"{args.dataset} has no labels: drop --conditional")
    if args.binarize and args.dataset != "mnist":
        raise SystemExit("--binarize applies to --dataset mnist only")
    levels = 2 if args.binarize else info.levels
    train_x, train_y = load_split(args.dataset, "train", args.data_dir, tuple(args.cifar_parts))
    test_x, test_y = load_split(args.dataset, "test", args.data_dir)
    if args.train_limit:
        train_x, train_y = train_x[: args.train_limit], None if train_y is None else train_y[: args.train_limit]
    if args.test_limit:
        test_x, test_y = test_x[: args.test_limit], None if test_y is None else test_y[: args.test_limit]
    if args.binarize:  # a fixed binarization of the test set, a fresh one of every training batch
        test_x = binarize(test_x, torch.Generator().manual_seed(1234))
    if not args.conditional:
        train_y = test_y = None

    model = build_model(**model_kwargs(args, levels)).to(device)
    if device.type == "cuda" and args.arch == "pixelcnn":
        model = model.to(memory_format=torch.channels_last)
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = (torch.optim.Adam if args.optimizer == "adam" else torch.optim.RMSprop)(model.parameters(), lr=args.lr)
    state = {"step": 0, "epoch": 0.0, "wall_time_s": 0.0, "history": []}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.resume and (args.out / "training_state.json").exists():
        model.load_state_dict(load_file(args.out / "model.safetensors"))
        state = load_training_state(args.out, optimizer)
    trained = DistributedDataParallel(LogProb(model)) if world > 1 else LogProb(model)

    dims = info.channels * info.height * info.width
    unit = "nats" if levels == 2 and info.channels == 1 else "bits/dim"
    in_unit = (lambda nats: nats) if unit == "nats" else (lambda nats: bits_per_dim(nats, dims))
    steps_per_epoch = len(train_x) // args.batch_size
    local = args.batch_size // world
    budget_s = args.minutes * 60 if args.minutes else math.inf
    max_steps = args.max_steps or int(args.epochs * steps_per_epoch)
    if is_main:
        print(f"{args.arch} on {args.dataset}: {parameters:,} parameters, {len(train_x)} train / {len(test_x)} test "
              f"images, batch {args.batch_size} on {world} x {device_name(device)}")
    started, earlier_s = time.time(), state["wall_time_s"]  # --minutes budgets this run; wall time accumulates
    bar = tqdm(total=max_steps, initial=state["step"], disable=not is_main or args.no_progress, desc="train")
    order = torch.empty(0, dtype=torch.long)
    model.train()
    while state["step"] < max_steps:
        epoch, position = divmod(state["step"], steps_per_epoch)
        if position == 0 or len(order) == 0:  # same shuffle on every process, reproducible on resume
            order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(args.seed + epoch))
        batch = order[position * args.batch_size : (position + 1) * args.batch_size][rank * local : (rank + 1) * local]
        x = train_x[batch]
        if args.binarize:
            x = binarize(x, torch.Generator().manual_seed(args.seed * 1_000_003 + state["step"]))
        x = x.to(device, non_blocking=True)
        y = None if train_y is None else train_y[batch].to(device)
        with autocast(device):
            loss = -trained(x, y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        state["step"] += 1
        state["epoch"] = state["step"] / steps_per_epoch
        bar.update()
        bar.set_postfix({unit: f"{in_unit(loss.item()):.3f}", "epoch": f"{state['epoch']:.2f}"})
        if args.eval_every and state["step"] % args.eval_every == 0:
            quick = evaluate(model, test_x[: args.eval_images], None if test_y is None else test_y[: args.eval_images],
                             64, device, rank, world)
            state["history"].append({"step": state["step"], f"test_{unit}": in_unit(quick)})
            if is_main:
                bar.write(f"step {state['step']}: test {in_unit(quick):.3f} {unit} (first {args.eval_images} images)")
        out_of_time = time.time() - started > budget_s
        if world > 1:  # every process stops at the same step
            flag = torch.tensor(float(out_of_time), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if out_of_time:
            break
    bar.close()
    state["wall_time_s"] = earlier_s + time.time() - started

    test_nll = evaluate(model, test_x, test_y, 64, device, rank, world, progress=is_main and not args.no_progress)
    metrics = {
        "dataset": args.dataset + ("_dynamic_binarized" if args.binarize else ""),
        "arch": args.arch, "multiscale_factor": args.factor or None, "parameters": parameters,
        "test_nll_nats": test_nll, "test_bits_per_dim": bits_per_dim(test_nll, dims),
        "unit": unit, f"test_{unit}": in_unit(test_nll), "test_images": len(test_x),
        "train_images": len(train_x), "steps": state["step"], "epochs": state["epoch"],
        "batch_size": args.batch_size, "wall_time_s": round(state["wall_time_s"], 1),
        "device": f"{world} x {device_name(device)}", "history": state["history"],
    }
    if is_main:
        model.save_pretrained(args.out)
        save_training_state(args.out, optimizer, {k: state[k] for k in ("step", "epoch", "wall_time_s", "history")})
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if args.samples:
            y = None if not args.conditional else torch.arange(args.samples, device=device) % info.num_classes
            images = sample(model, args.samples, y=y, seed=args.seed)
            image_grid(images, levels, columns=math.ceil(args.samples**0.5)).save(args.out / "samples.png")
        write_model_card(args.out)
        print(f"test NLL {test_nll:.2f} nats/image = {bits_per_dim(test_nll, dims):.4f} bits/dim "
              f"on {len(test_x)} test images after {state['step']} steps ({state['epoch']:.2f} epochs, "
              f"{state['wall_time_s']:.0f} s); saved to {args.out}")
    if world > 1:
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
