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
from collections.abc import Iterator
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
from pixelrnn.plots import learning_curve
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
    p.add_argument("--config", type=Path, help="JSON file of defaults (keys: these options' names); flags override")
    p.add_argument("--arch", choices=ARCHS, default="diagonal_bilstm")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="binarized_mnist")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with the .npz files")
    p.add_argument("--binarize", action="store_true", help="mnist: dynamic binarization (levels 2)")
    p.add_argument("--conditional", action="store_true", help="class-conditional (mnist, cifar10)")
    p.add_argument("--cifar-parts", default="abcd", help="which CIFAR-10 train quarters to load")
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training images")
    p.add_argument("--hidden", type=int, default=None, help="h: recurrent state size (default: the paper's size)")
    p.add_argument("--layers", type=int, default=None, help="default: the paper's depth for --arch and --dataset")
    p.add_argument("--out-hidden", type=int, default=None, help="output layer width (default per dataset)")
    p.add_argument("--no-skip", action="store_true", help="no skip connections to the output")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout on each layer's residual branch")
    p.add_argument("--hflip", action="store_true", help="mirror each training image left-right with probability 1/2")
    p.add_argument("--factor", type=int, default=0, help="Multi-Scale PixelRNN: subsampling factor (e.g. 2)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch (split across processes)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="after warm-up: cosine decay to --min-lr over the run, or constant")
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--min-lr", type=float, default=0.02, help="cosine: final lr as a fraction of --lr")
    p.add_argument("--ema", type=float, default=0.999,
                   help="decay of the weights' moving average (0: none); step t uses min(decay, (1+t)/(10+t))")
    p.add_argument("--optimizer", choices=("adam", "rmsprop"), default="adam")
    p.add_argument("--clip", type=float, default=1.0,
                   help="gradient norm clip, on the gradient of the loss in nats per sub-pixel (0: none)")
    p.add_argument("--epochs", type=float, default=1000.0, help="length of the run when neither --max-steps "
                   "nor --hours is given")
    p.add_argument("--max-steps", type=int, default=0, help="length of the run (and of the lr schedule) in steps")
    p.add_argument("--hours", type=float, default=0.0,
                   help="length of the run (and of the lr schedule) in training hours, across resumes")
    p.add_argument("--minutes", type=float, default=0.0, help="time budget of this call (0: none); --resume goes on")
    p.add_argument("--patience", type=int, default=0, help="stop after N evaluations without improvement (0: never)")
    p.add_argument("--eval-every", type=int, default=500, help="steps between validation evaluations")
    p.add_argument("--eval-images", type=int, default=2000, help="random validation images per evaluation (0: all)")
    p.add_argument("--test-limit", type=int, default=0, help="final evaluation on the first N only (0: all)")
    p.add_argument("--samples", type=int, default=16, help="samples drawn into samples.png (0: none)")
    p.add_argument("--out", type=Path, default=Path("runs/model"))
    p.add_argument("--resume", action="store_true", help="continue from OUT's training state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast for training (default: on for CUDA; also faster on a CPU with bf16 "
                        "instructions); evaluation is always float32")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=True,
                   help="CUDA: capture the whole training step once and replay it (single process)")
    p.add_argument("--no-progress", action="store_true")
    pre, _ = p.parse_known_args(argv)
    if pre.config is not None:
        config = json.loads(pre.config.read_text())
        known = {a.dest for a in p._actions}
        unknown = sorted(set(config) - known - {"hardware", "notes"})
        if unknown:
            raise SystemExit(f"{pre.config}: unknown keys {unknown}")
        p.set_defaults(**{k: v for k, v in config.items() if k in known})
    return p.parse_args(argv)


TEST_BINARIZATION_SEED = 1234  # --binarize: the one fixed binarization of the test split
PAPER_HIDDEN = {"binarized_mnist": 16, "mnist": 16, "cifar10": 128}  # h of Sec. 5


def paper_layers(dataset: str, arch: str) -> int:
    """Depth of Sec. 5: 15 PixelCNN blocks; 7 recurrent layers on MNIST, 12 on CIFAR-10 (its 12-layer Row LSTM)."""
    return 12 if dataset == "cifar10" and arch != "pixelcnn" else DEFAULT_LAYERS[arch]


def default_out_hidden(channels: int, levels: int) -> int:
    """Output layer width: 64 for a Bernoulli; 128 features per colour for a 256-way softmax."""
    return 64 if levels == 2 else 128 * channels


def model_kwargs(args: argparse.Namespace, levels: int) -> dict:
    info = DATASETS[args.dataset]
    kwargs = {"arch": args.arch, "channels": info.channels, "levels": levels, "height": info.height, "width": info.width,
              "num_classes": info.num_classes if args.conditional else None,
              "hidden": args.hidden or PAPER_HIDDEN[args.dataset],
              "layers": args.layers or paper_layers(args.dataset, args.arch),
              "out_hidden": args.out_hidden or default_out_hidden(info.channels, levels), "skip": not args.no_skip,
              "dropout": args.dropout}
    if args.factor:
        kwargs["factor"] = args.factor
    return kwargs


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({platform.processor() or platform.machine()}, {threads} thread{'s' if threads > 1 else ''})"


@torch.no_grad()
def mean_nll(model: Model, images: Tensor, labels: Tensor | None, batch_size: int, device: torch.device,
             rank: int = 0, world: int = 1, progress: bool = False) -> float:
    """Mean NLL in nats per image over `images`, in float32 (no autocast), sharded across processes."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of NLL, count]
    shard = range(rank * batch_size, len(images), world * batch_size)
    for start in tqdm(shard, desc="eval", leave=False, disable=not progress):
        x = images[start : start + batch_size].to(device)
        y = None if labels is None else labels[start : start + batch_size].to(device)
        nll = -model.log_prob(x, y)
        total += torch.stack([nll.double().sum(), torch.tensor(float(len(x)), device=device)])
    if world > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return (total[0] / total[1]).item()


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast (on a GPU, or a CPU with bf16 instructions); the cache must be off inside a CUDA graph capture."""
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def learning_rate(args: argparse.Namespace, step: int, progress: float) -> float:
    """Linear warm-up over --warmup-steps, then constant or cosine decay to --min-lr * --lr at progress 1."""
    warm = min(1.0, (step + 1) / max(1, args.warmup_steps))
    if args.schedule == "constant":
        return args.lr * warm
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return args.lr * warm * (args.min_lr + (1 - args.min_lr) * cosine)


class TrainStep:
    """forward + backward + clip + optimizer + EMA on static batch buffers.

    On CUDA (one process) the whole step is captured once as a CUDA graph and replayed:
    the recurrent layers launch thousands of tiny kernels per step, and a replay launches
    them all at once. Elsewhere it runs eagerly. The loss is nats per sub-pixel, so --clip
    is independent of image size.
    """

    def __init__(self, trained: torch.nn.Module, model: Model, optimizer: torch.optim.Optimizer,
                 ema: list[Tensor] | None, args: argparse.Namespace, dims: int, x: Tensor, y: Tensor | None,
                 device: torch.device, graph: bool, bf16: bool):
        self.trained, self.optimizer, self.ema, self.args, self.dims = trained, optimizer, ema, args, dims
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.x, self.y, self.device, self.bf16 = x, y, device, bf16
        self.ema_rate = torch.zeros((), device=device)  # 1 - this step's decay; a graph reads it from the device
        self.graph = None
        if graph:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
                self.warm_up(3)
            torch.cuda.current_stream(device).wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(self.graph):
                self.loss, self.grad_norm = self._step()
        else:
            self.loss = self.grad_norm = None

    def warm_up(self, steps: int) -> None:
        """Run `steps` steps, which allocates the optimizer's state as a graph capture requires, then put the
        weights, their average and the optimizer's state back: the warm-up must not train the model."""
        tensors = self.params + (self.ema or [])
        before = [t.detach().clone() for t in tensors]
        state_before = {(p, k): v.clone() for p, s in self.optimizer.state.items() for k, v in s.items()
                        if torch.is_tensor(v)}
        for _ in range(steps):
            self._step()
        with torch.no_grad():
            torch._foreach_copy_(tensors, before)
            for p, s in self.optimizer.state.items():
                for k, v in s.items():
                    if torch.is_tensor(v):  # state that the warm-up created starts from zero, as a fresh one does
                        v.copy_(state_before[p, k]) if (p, k) in state_before else v.zero_()

    def _step(self) -> tuple[Tensor, Tensor]:
        with autocast(self.device, self.bf16):
            loss = -self.trained(self.x, self.y).mean() / self.dims  # nats per sub-pixel
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.args.clip or math.inf)
        self.optimizer.step()
        if self.ema is not None:  # ema += rate * (params - ema), outside autograd (else each step extends a graph)
            with torch.no_grad():
                torch._foreach_add_(self.ema, torch._foreach_mul(torch._foreach_sub(self.params, self.ema),
                                                                 self.ema_rate))
        if self.graph is None:
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), grad_norm.detach()

    def __call__(self, step: int = 0) -> tuple[Tensor, Tensor]:
        """Training step number `step` on the current contents of x and y -> (loss in nats/sub-pixel, gradient norm).

        The moving average warms up: its decay is min(--ema, (1 + step) / (10 + step)), so that a short run's
        average is not dominated by the initial weights.
        """
        self.ema_rate.fill_(1.0 - min(self.args.ema, (1 + step) / (10 + step)))
        if self.graph is not None:
            self.graph.replay()
            return self.loss, self.grad_norm
        return self._step()


def save_training_state(out: Path, optimizer: torch.optim.Optimizer, state: dict,
                        weights: dict[str, Tensor], rng: dict[str, Tensor]) -> None:
    """Optimizer tensors, the current (raw and EMA) weights and the random generators' states to safetensors,
    counters to JSON: resuming never unpickles anything."""
    opt = optimizer.state_dict()
    tensors = {f"weights.{k}": v.detach().contiguous().cpu() for k, v in weights.items()}
    tensors.update({f"rng.{k}": v.contiguous().cpu() for k, v in rng.items()})
    scalars = {}
    for index, param_state in opt["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{index}.{key}"] = value.contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = float(value)
    groups = [{k: (float(v) if torch.is_tensor(v) else v) for k, v in g.items()} for g in opt["param_groups"]]
    save_file(tensors, out / "training_state.safetensors")
    (out / "training_state.json").write_text(json.dumps({**state, "optimizer_scalars": scalars,
                                                         "param_groups": groups}, indent=1))


def load_training_state(out: Path, optimizer: torch.optim.Optimizer
                        ) -> tuple[dict, dict[str, Tensor], dict[str, Tensor]]:
    """-> (counters, weights saved by save_training_state: "model.*" raw, "ema.*" averaged, generator states)."""
    state = json.loads((out / "training_state.json").read_text())
    tensors = load_file(out / "training_state.safetensors")
    weights = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("weights.")}
    rng = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("rng.")}
    per_param: dict[int, dict] = {}
    optimizer_tensors = [(k, v) for k, v in tensors.items() if not k.startswith(("weights.", "rng."))]
    for name, value in [*optimizer_tensors, *state.pop("optimizer_scalars").items()]:
        index, key = name.split(".", 1)
        per_param.setdefault(int(index), {})[key] = torch.tensor(value) if key == "step" else value
    groups = state.pop("param_groups")
    lrs = [g["lr"] for g in optimizer.param_groups]  # keep this optimizer's lr objects (a tensor under a graph)
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    return state, weights, rng


def validation_subset(count: int, size: int) -> Tensor:
    """Indices of the validation images scored during training: a fixed random pick of `size` of `count` (all of
    them when size is 0), never the first ones, as the splits are sorted by digit."""
    pick = torch.randperm(count, generator=torch.Generator().manual_seed(99))
    return pick[:size] if size else pick


def better_weights(record: dict) -> str:
    """Which weights of an evaluation did better on the validation subset: "ema" (ties included) or "raw"."""
    return "ema" if record.get("valid_ema", math.inf) <= record["valid_raw"] else "raw"


def split_validation(dataset: str, args: argparse.Namespace) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """-> (train x, train y, validation x, validation y).

    binarized MNIST has its own validation split; MNIST holds out its last 5,000 training
    images; CIFAR-10 the last 1,250 of each training quarter (5,000 over the four).
    """
    if dataset == "binarized_mnist":
        train_x, train_y = load_split(dataset, "train", args.data_dir)
        valid_x, valid_y = load_split(dataset, "valid", args.data_dir)
        return train_x, train_y, valid_x, valid_y
    if dataset == "mnist":
        x, y = load_split(dataset, "train", args.data_dir)
        held = min(5000, max(1, len(x) // 10))
        return x[:-held], y[:-held], x[-held:], y[-held:]
    parts = [load_split(dataset, "train", args.data_dir, (part,)) for part in args.cifar_parts]
    held = [min(1250, max(1, len(x) // 10)) for x, _ in parts]
    train_x = torch.cat([x[: len(x) - n] for (x, _), n in zip(parts, held)])
    train_y = torch.cat([y[: len(y) - n] for (_, y), n in zip(parts, held)])
    valid_x = torch.cat([x[len(x) - n :] for (x, _), n in zip(parts, held)])
    valid_y = torch.cat([y[len(y) - n :] for (_, y), n in zip(parts, held)])
    return train_x, train_y, valid_x, valid_y


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
    bf16 = device.type == "cuda" if args.bf16 is None else args.bf16
    use_graph = args.cuda_graph and device.type == "cuda" and world == 1

    info = DATASETS[args.dataset]
    if args.conditional and info.num_classes is None:
        raise SystemExit(f"{args.dataset} has no labels: drop --conditional")
    if args.binarize and args.dataset != "mnist":
        raise SystemExit("--binarize applies to --dataset mnist only")
    levels = 2 if args.binarize else info.levels
    train_x, train_y, valid_x, valid_y = split_validation(args.dataset, args)
    test_x, test_y = load_split(args.dataset, "test", args.data_dir)
    if args.train_limit:
        train_x, train_y = train_x[: args.train_limit], None if train_y is None else train_y[: args.train_limit]
    if args.test_limit:
        test_x, test_y = test_x[: args.test_limit], None if test_y is None else test_y[: args.test_limit]
    if args.binarize:  # fixed binarizations of the held-out sets, a fresh one of every training batch
        valid_x = binarize(valid_x, torch.Generator().manual_seed(4321))
        test_x = binarize(test_x, torch.Generator().manual_seed(TEST_BINARIZATION_SEED))
    if not args.conditional:
        train_y = valid_y = test_y = None
    # the whole training set lives on the device as uint8; batches are gathered by random index there
    train_x = train_x.to(device)
    train_y = None if train_y is None else train_y.to(device)
    eval_pick = validation_subset(len(valid_x), args.eval_images)
    quick_x, quick_y = valid_x[eval_pick], None if valid_y is None else valid_y[eval_pick]

    model = build_model(**model_kwargs(args, levels)).to(device)
    if device.type == "cuda" and args.arch == "pixelcnn":
        model = model.to(memory_format=torch.channels_last)
    parameters = sum(p.numel() for p in model.parameters())
    lr = torch.tensor(args.lr, device=device) if use_graph else args.lr  # a graph reads the lr from the device
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, capturable=use_graph)
    else:
        optimizer = torch.optim.RMSprop(model.parameters(), lr=lr, capturable=use_graph)
    names = [name for name, _ in model.named_parameters()]
    ema = [p.detach().clone() for p in model.parameters()] if args.ema else None
    settings = run_settings(args)
    state = {"step": 0, "epoch": 0.0, "wall_time_s": 0.0, "history": [], "best": None, "bad_evals": 0,
             "settings": settings, "changes": []}
    rng: dict[str, Tensor] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.resume and (args.out / "training_state.json").exists():
        saved = json.loads((args.out / "training_state.json").read_text()).get("settings", {})
        if saved and shape_of(saved) != shape_of(settings):
            raise SystemExit(f"{args.out} holds another model: {shape_of(saved)}, not {shape_of(settings)}")
        loaded, weights, rng = load_training_state(args.out, optimizer)
        changed = {k: [v, settings.get(k)] for k, v in saved.items() if settings.get(k) != v}
        state = {**state, **loaded, "settings": settings}  # states saved before settings were kept: no changes list
        if changed:  # e.g. a longer --hours: recorded, because the run no longer equals its config from scratch
            print(f"resuming at step {state['step']} with changed settings (old, new): {changed}")
            state["changes"].append({"step": state["step"], "changed": changed})
        if "device" in changed:  # the batch generator lives on the device: its saved state does not fit another
            rng.pop("batches", None)
            rng.pop("cuda", None)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(weights[f"model.{name}"])
            if ema is not None:  # a run that had no average starts it from the current weights
                for name, e in zip(names, ema):
                    e.copy_(weights.get(f"ema.{name}", weights[f"model.{name}"]))
    best = None  # state dict of the best evaluated weights, on every process
    if state["best"] is not None and (state["best"].get("valid_images"), state["best"].get("eval_images", len(quick_x))
                                      ) != (len(valid_x), len(quick_x)):
        state["best"] = None  # the validation set or its subset changed (other CIFAR quarters): compare afresh
    if args.resume and state["best"] is not None and (args.out / "best.safetensors").exists():
        best = load_file(args.out / "best.safetensors", device=str(device))
    trained = DistributedDataParallel(LogProb(model)) if world > 1 else LogProb(model)

    dims = info.channels * info.height * info.width
    unit = "nats" if levels == 2 and info.channels == 1 else "bits/dim"
    in_unit = (lambda nats: nats) if unit == "nats" else (lambda nats: bits_per_dim(nats, dims))
    steps_per_epoch = max(1, len(train_x) // args.batch_size)
    local = args.batch_size // world
    budget_s = args.minutes * 60 if args.minutes else math.inf
    max_steps = args.max_steps or (0 if args.hours else int(args.epochs * steps_per_epoch))
    if not max_steps and not args.hours:
        raise SystemExit("the run has no length: give --max-steps, --hours or --epochs above 0")

    def progress() -> float:
        by_steps = state["step"] / max_steps if max_steps else 0.0
        by_time = state["wall_time_s"] / (args.hours * 3600) if args.hours else 0.0
        return max(by_steps, by_time)

    if is_main:
        print(f"{args.arch} on {args.dataset}: {parameters:,} parameters, {len(train_x)} train / {len(valid_x)} "
              f"validation / {len(test_x)} test images, batch {args.batch_size} on {world} x {device_name(device)}"
              f"{', bf16' if bf16 else ''}{', CUDA graph' if use_graph else ''}")
    x_batch = torch.zeros(local, info.channels, info.height, info.width, dtype=torch.uint8, device=device)
    y_batch = None if train_y is None else torch.zeros(local, dtype=torch.long, device=device)
    generator = torch.Generator(device).manual_seed(args.seed * 1_000_003 + state["step"])  # the same on every process

    def next_batch() -> None:
        # every process draws the global batch (the same numbers) and keeps its share
        index = torch.randint(len(train_x), (args.batch_size,), device=device, generator=generator)
        x = train_x[index[rank * local : (rank + 1) * local]]
        mine = slice(rank * local, (rank + 1) * local)
        if args.binarize:  # dynamic binarization, on the device
            x = binarize(x, noise=torch.rand(args.batch_size, *x.shape[1:], device=device, generator=generator)[mine])
        if args.hflip:
            flip = (torch.rand(args.batch_size, 1, 1, 1, device=device, generator=generator) < 0.5)[mine]
            x = torch.where(flip, x.flip(-1), x)
        x_batch.copy_(x)
        if y_batch is not None:
            y_batch.copy_(train_y[index[mine]])

    def weights() -> dict[str, Tensor]:
        saved = {f"model.{k}": v for k, v in model.state_dict().items()}
        if ema is not None:
            saved.update({f"ema.{name}": e for name, e in zip(names, ema)})
        return saved

    @contextlib.contextmanager
    def swapped_in(which: str) -> Iterator[None]:
        """Within: the model holds the moving average (which="ema") or its own weights ("raw"); after: its own."""
        if which != "ema":
            yield
            return
        raw = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            torch._foreach_copy_(list(model.parameters()), ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(list(model.parameters()), raw)

    def save_state() -> None:
        state["wall_time_s"] = earlier_s + time.time() - started  # evaluations' time counts too
        rng = {"batches": generator.get_state(), "torch": torch.get_rng_state()}
        if device.type == "cuda":  # dropout on the GPU
            rng["cuda"] = torch.cuda.get_rng_state(device)
        save_training_state(args.out, optimizer, {k: state[k] for k in STATE_KEYS}, weights(), rng)

    def validate(rate: float, train_loss: float, grad_norm: float) -> None:
        """Score the raw and the averaged weights on the validation subset; keep the better if it is the best yet."""
        nonlocal best
        record = {"step": state["step"], "images": state["step"] * args.batch_size,
                  "hours": round(state["wall_time_s"] / 3600, 4), "lr": rate,
                  "train_loss": in_unit(train_loss * dims), "grad_norm": grad_norm}
        for which in ("raw", "ema") if ema is not None else ("raw",):
            with swapped_in(which):
                record[f"valid_{which}"] = in_unit(mean_nll(model, quick_x, quick_y, 500, device, rank, world))
        which = better_weights(record)
        best_now = record[f"valid_{which}"]
        if state["best"] is None or best_now < state["best"]["valid"]:
            state["best"] = {"valid": best_now, "step": state["step"], "weights": which,
                             "valid_images": len(valid_x), "eval_images": len(quick_x)}
            state["bad_evals"] = 0
            with swapped_in(which):
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if is_main:
                save_file({k: v.contiguous().cpu() for k, v in best.items()}, args.out / "best.safetensors")
        else:
            state["bad_evals"] += 1
        state["history"].append(record)
        if is_main:
            bar.write(f"step {state['step']}: valid {record['valid_raw']:.3f}"
                      + (f" (EMA {record['valid_ema']:.3f})" if "valid_ema" in record else "")
                      + f" {unit} on {len(quick_x)} validation images; train {record['train_loss']:.3f}")

    next_batch()
    step_fn = TrainStep(trained, model, optimizer, ema, args, dims, x_batch, y_batch, device, use_graph, bf16)
    # a resumed run draws the batches and dropout masks that an uninterrupted one would
    if "batches" in rng:
        generator.set_state(rng["batches"])
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    started, earlier_s, first_step = time.time(), state["wall_time_s"], state["step"]  # --minutes: this call
    bar = tqdm(total=max_steps or None, initial=state["step"], disable=not is_main or args.no_progress, desc="train")
    model.train()
    stopped = "budget"
    running = []  # (loss, grad norm) tensors since the last log, read in one sync

    def mean_of_running() -> list[float]:
        """-> [mean loss, mean gradient norm] since the last call."""
        means = torch.stack(running).float().mean(0).tolist()
        running.clear()
        return means

    while True:
        state["wall_time_s"] = earlier_s + time.time() - started
        out_of_time = time.time() - started > budget_s
        if world > 1:  # one clock and one decision for all processes, so that they stop at the same step
            shared = torch.tensor([state["wall_time_s"], float(out_of_time)], dtype=torch.float64, device=device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            state["wall_time_s"], out_of_time = shared[0].item(), bool(shared[1].item())
        if progress() >= 1:
            stopped = "done"
            break
        if args.patience and state["bad_evals"] >= args.patience:
            stopped = "early stop"
            break
        if out_of_time:
            break
        rate = learning_rate(args, state["step"], progress())
        for group in optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(rate)
            else:
                group["lr"] = rate
        next_batch()
        loss, grad_norm = step_fn(state["step"])
        running.append(torch.stack([loss, grad_norm]))
        state["step"] += 1
        state["epoch"] = state["step"] * args.batch_size / len(train_x)
        bar.update()
        if state["step"] % 50 == 0 or (args.eval_every and state["step"] % args.eval_every == 0):
            mean_loss, mean_norm = mean_of_running()
            bar.set_postfix({unit: f"{in_unit(mean_loss * dims):.3f}", "grad": f"{mean_norm:.3g}",
                             "lr": f"{rate:.2e}", "epoch": f"{state['epoch']:.2f}"})
        if args.eval_every and state["step"] % args.eval_every == 0:
            validate(rate, mean_loss, mean_norm)
            if is_main:
                save_state()
    bar.close()
    finished = stopped != "budget"
    if finished and args.eval_every and state["step"] > first_step and state["step"] % args.eval_every:
        # the steps since the last evaluation ran at the lowest lr: score them too before choosing what ships
        if running:
            mean_loss, mean_norm = mean_of_running()
        validate(rate, mean_loss, mean_norm)
    if is_main:
        save_state()
    # the model that ships: the best evaluated weights (raw or EMA), else the current EMA
    if best is not None:
        model.load_state_dict(best)
    elif ema is not None:
        with torch.no_grad():
            torch._foreach_copy_(list(model.parameters()), ema)
    model.eval()
    valid_nll = mean_nll(model, valid_x, valid_y, 500, device, rank, world, progress=is_main and not args.no_progress)
    metrics = {
        "dataset": args.dataset + ("_dynamic_binarized" if args.binarize else ""),
        "arch": args.arch, "multiscale_factor": args.factor or None, "parameters": parameters,
        "unit": unit, "valid_nll_nats": valid_nll, "valid_bits_per_dim": bits_per_dim(valid_nll, dims),
        "valid_images": len(valid_x),
        "train_images": len(train_x), "images_seen": state["step"] * args.batch_size,
        "steps": state["step"], "epochs": state["epoch"], "batch_size": args.batch_size,
        "wall_time_s": round(state["wall_time_s"], 1), "hours": round(state["wall_time_s"] / 3600, 3),
        "device": device_name(device) if world == 1 else f"{world} x {device_name(device)}", "finished": finished,
        "stopped": stopped,
        "selected": state["best"], "config": settings, "changes": state["changes"], "history": state["history"],
    }
    if finished:  # the test split is evaluated once, at the end
        test_nll = mean_nll(model, test_x, test_y, 500, device, rank, world, progress=is_main and not args.no_progress)
        metrics.update({"test_nll_nats": test_nll, "test_bits_per_dim": bits_per_dim(test_nll, dims),
                        "test_images": len(test_x)})
    if is_main:
        model.save_pretrained(args.out)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if args.samples and finished:
            y = None if not args.conditional else torch.arange(args.samples, device=device) % info.num_classes
            images = sample(model, args.samples, y=y, seed=args.seed)
            image_grid(images, levels, columns=math.ceil(args.samples**0.5)).save(args.out / "samples.png")
        title = f"{args.arch} on {metrics['dataset']}; validation on {len(quick_x):,} of {len(valid_x):,} images"
        learning_curve(state["history"], unit, title).save(args.out / "learning_curve.png")
        write_model_card(args.out)
        result = (f"test NLL {in_unit(metrics['test_nll_nats']):.3f} {unit} on {len(test_x)} test images"
                  if finished else f"not finished ({progress():.0%}): validation only")
        print(f"{result}; validation {in_unit(valid_nll):.3f} {unit} after {state['step']} steps "
              f"({state['epoch']:.2f} epochs, {state['wall_time_s']:.0f} s); saved to {args.out}")
    if world > 1:
        dist.destroy_process_group()
    return metrics


STATE_KEYS = ("step", "epoch", "wall_time_s", "history", "best", "bad_evals", "settings", "changes")
PER_CALL = ("resume", "no_progress", "out", "data_dir", "config", "minutes")  # options that do not define a run


def run_settings(args: argparse.Namespace) -> dict:
    """The options that define a run (and its config file), as JSON values."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in PER_CALL}


def shape_of(settings: dict) -> dict:
    """The model that run settings build (dropout aside, which a resume may change)."""
    args = argparse.Namespace(**settings)
    levels = 2 if args.binarize else DATASETS[args.dataset].levels
    return {k: v for k, v in model_kwargs(args, levels).items() if k != "dropout"}


if __name__ == "__main__":
    main()
