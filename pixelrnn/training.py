"""The pieces of a training run, each testable alone: the step (with its CUDA graph), the schedule, the weights'
moving average, batches, validation splits and scoring, and a resumable training state. `pixelrnn.train` puts them
together into a run."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from pixelrnn.data import DATASETS, binarize, load_split
from pixelrnn.model import Model, bits_per_dim

TEST_BINARIZATION_SEED = 1234  # --binarize: the one fixed binarization of the test split
VALID_BINARIZATION_SEED = 4321  # --binarize: the one fixed binarization of the validation split

class LogProb(torch.nn.Module):
    """forward = the training objective per image, in nats, to be maximised: log p(x | y); for a class-conditional
    model with class_weight > 0 plus class_weight * log p(y | x), a hybrid generative-discriminative objective (the
    class is worth at most log 10 nats of an image's likelihood, so likelihood alone barely rewards using it).
    p(y | x) comes from the model itself by Bayes' rule under a uniform prior, over y and `negatives` other classes
    drawn at random per image (0: all of them, the exact posterior; fewer cost less and overstate p(y | x)).
    A module because DistributedDataParallel syncs gradients only through forward."""

    def __init__(self, model: Model, class_weight: float = 0.0, negatives: int = 0):
        super().__init__()
        self.model, self.class_weight, self.negatives = model, class_weight, negatives

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        log_px = self.model.log_prob(x, y)  # (B,)
        if y is None or not self.class_weight:
            return log_px
        return log_px + self.class_weight * self.log_posterior(x, y, log_px)

    def log_posterior(self, x: Tensor, y: Tensor, log_px: Tensor) -> Tensor:
        """log p(y | x) over y and the negative classes, (B,); log_px = log p(x | y), (B,)."""
        classes = self.model.config.num_classes
        count = min(self.negatives or classes - 1, classes - 1)
        shifts = torch.rand(len(y), classes - 1, device=y.device).argsort(1)[:, :count] + 1  # (B, K), none 0
        others = (y[:, None] + shifts) % classes  # (B, K): classes other than y
        repeated = x.repeat_interleave(count, 0)  # (B * K, C, H, W), image b's copies next to each other
        log_others = self.model.log_prob(repeated, others.flatten()).view(len(y), count)  # (B, K)
        return log_px - torch.logsumexp(torch.cat([log_px[:, None], log_others], 1), 1)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({platform.processor() or platform.machine()}, {threads} thread{'s' if threads > 1 else ''})"


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


def better_weights(record: dict, score: str = "valid") -> str:
    """Which weights of an evaluation did better on the validation subset by record's f"{score}_raw" and
    f"{score}_ema" (lower is better): "ema" (ties included) or "raw"; a non-finite (diverged) score loses to a finite
    one."""
    raw, ema = (record.get(f"{score}_{which}", math.inf) for which in ("raw", "ema"))
    raw, ema = (value if math.isfinite(value) else math.inf for value in (raw, ema))
    return "ema" if ema <= raw and f"{score}_ema" in record else "raw"


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



@dataclass
class Splits:
    """A run's images (uint8 pixel levels) and labels (None unless class-conditional): the training set on the
    device, the validation set, its fixed subset scored during training ("quick") and the test set."""

    train_x: Tensor
    train_y: Tensor | None
    valid_x: Tensor
    valid_y: Tensor | None
    quick_x: Tensor
    quick_y: Tensor | None
    test_x: Tensor
    test_y: Tensor | None
    levels: int


def load_splits(args: argparse.Namespace, device: torch.device) -> Splits:
    """The data set of --dataset under --data-dir, limited, binarized and labelled as the options say."""
    info = DATASETS[args.dataset]
    train_x, train_y, valid_x, valid_y = split_validation(args.dataset, args)
    test_x, test_y = load_split(args.dataset, "test", args.data_dir)
    if args.train_limit:
        train_x, train_y = train_x[: args.train_limit], None if train_y is None else train_y[: args.train_limit]
    if args.test_limit:
        test_x, test_y = test_x[: args.test_limit], None if test_y is None else test_y[: args.test_limit]
    if args.binarize:  # fixed binarizations of the held-out sets, a fresh one of every training batch
        valid_x = binarize(valid_x, torch.Generator().manual_seed(VALID_BINARIZATION_SEED))
        test_x = binarize(test_x, torch.Generator().manual_seed(TEST_BINARIZATION_SEED))
    if not args.conditional:
        train_y = valid_y = test_y = None
    # the whole training set lives on the device as uint8; batches are gathered by random index there
    train_x, train_y = train_x.to(device), None if train_y is None else train_y.to(device)
    pick = validation_subset(len(valid_x), args.eval_images)
    return Splits(train_x, train_y, valid_x, valid_y, valid_x[pick], None if valid_y is None else valid_y[pick],
                  test_x, test_y, 2 if args.binarize else info.levels)


class Batches:
    """Random training batches, drawn on the device into fixed buffers `x`, `y` (a CUDA graph reads them there).

    Every process draws the global batch (the same numbers, from one seeded generator) and keeps its share, so a run
    on N processes sees the batches of a run on one. --binarize draws each batch's binarization, --hflip its flips.
    """

    def __init__(self, args: argparse.Namespace, splits: Splits, rank: int, world: int, device: torch.device,
                 step: int):
        self.args, self.train_x, self.train_y = args, splits.train_x, splits.train_y
        local = args.batch_size // world
        self.mine = slice(rank * local, (rank + 1) * local)
        self.x = torch.zeros(local, *splits.train_x.shape[1:], dtype=torch.uint8, device=device)
        self.y = None if splits.train_y is None else torch.zeros(local, dtype=torch.long, device=device)
        self.generator = torch.Generator(device).manual_seed(args.seed * 1_000_003 + step)

    def next(self) -> None:
        """Draw the next batch into x (and y)."""
        args, generator, device = self.args, self.generator, self.x.device
        index = torch.randint(len(self.train_x), (args.batch_size,), device=device, generator=generator)
        x = self.train_x[index[self.mine]]
        if args.binarize:  # dynamic binarization, on the device
            noise = torch.rand(args.batch_size, *x.shape[1:], device=device, generator=generator)
            x = binarize(x, noise=noise[self.mine])
        if args.hflip:
            flip = (torch.rand(args.batch_size, 1, 1, 1, device=device, generator=generator) < 0.5)[self.mine]
            x = torch.where(flip, x.flip(-1), x)
        self.x.copy_(x)
        if self.y is not None:
            self.y.copy_(self.train_y[index[self.mine]])


class Averaged:
    """A model's weights with their moving average (`ema`, None when --ema is 0), saved and restored together."""

    def __init__(self, model: Model, decay: float):
        self.model = model
        self.names = [name for name, _ in model.named_parameters()]
        self.ema = [p.detach().clone() for p in model.parameters()] if decay else None

    def tensors(self) -> dict[str, Tensor]:
        """"model.*": the weights (and buffers); "ema.*": their average."""
        saved = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            saved.update({f"ema.{name}": e for name, e in zip(self.names, self.ema)})
        return saved

    @torch.no_grad()
    def restore(self, saved: dict[str, Tensor]) -> None:
        """Put back what `tensors` gave; a run saved without an average starts it from the weights."""
        for name, p in self.model.named_parameters():
            p.copy_(saved[f"model.{name}"])
        if self.ema is not None:
            for name, e in zip(self.names, self.ema):
                e.copy_(saved.get(f"ema.{name}", saved[f"model.{name}"]))

    @contextlib.contextmanager
    def swapped_in(self, which: str) -> Iterator[None]:
        """Within: the model holds the average (which="ema") or its own weights ("raw"); after: its own."""
        if which != "ema":
            yield
            return
        params = list(self.model.parameters())
        raw = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_copy_(params, self.ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, raw)


class PausableClock:
    """Seconds of training since this call began: wall-clock time less the time the process spent stopped by SIGTSTP
    (`kill -TSTP PID`, or Ctrl-Z; `kill -CONT PID` resumes), so that a background run paused for measurements
    keeps its --hours of training. A SIGSTOP is not seen by the process: its pause counts."""

    def __init__(self) -> None:
        self.start, self.paused_s = time.monotonic(), 0.0
        if hasattr(signal, "SIGTSTP") and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTSTP, self._stop)

    def _stop(self, *_) -> None:
        stopped_at = time.monotonic()
        os.kill(os.getpid(), signal.SIGSTOP)  # returns once SIGCONT has resumed the process (no handler race)
        self.paused_s += time.monotonic() - stopped_at

    def seconds(self) -> float:
        return time.monotonic() - self.start - self.paused_s


@dataclass
class Run:
    """What a training run works on, passed to the plain functions below. `state` holds the counters, the
    evaluation history and the best evaluation (saved as training_state.json); `best` the best weights."""

    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    splits: Splits
    model: Model
    optimizer: torch.optim.Optimizer
    weights: Averaged
    state: dict
    best: dict[str, Tensor] | None = None
    bar: tqdm | None = None
    clock: PausableClock | None = None  # this call's training time, from its loop's start
    earlier_s: float = 0.0  # training time of the calls before (--resume)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dims(self) -> int:
        return math.prod(self.splits.valid_x.shape[1:])

    @property
    def unit(self) -> str:
        """The paper's unit: nats per image for binarized MNIST, bits per sub-pixel otherwise."""
        return "nats" if self.splits.levels == 2 and self.splits.valid_x.shape[1] == 1 else "bits/dim"

    def in_unit(self, nats: float) -> float:
        return nats if self.unit == "nats" else bits_per_dim(nats, self.dims)

    def max_steps(self) -> int:
        steps_per_epoch = max(1, len(self.splits.train_x) // self.args.batch_size)
        return self.args.max_steps or (0 if self.args.hours else int(self.args.epochs * steps_per_epoch))

    def progress(self) -> float:
        """How far the run is, 0..1: by steps or by training hours, whichever is further."""
        max_steps, hours = self.max_steps(), self.args.hours
        by_steps = self.state["step"] / max_steps if max_steps else 0.0
        return max(by_steps, self.state["wall_time_s"] / (hours * 3600) if hours else 0.0)


def start_processes(args: argparse.Namespace) -> tuple[int, int, torch.device]:
    """-> (rank, world size, device); joins the process group under torchrun."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = torch.device(args.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
    return rank, world, device


def restore_generators(rng: dict[str, Tensor], batches: Batches, device: torch.device) -> None:
    if "batches" in rng:
        batches.generator.set_state(rng["batches"])
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
