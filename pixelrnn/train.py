"""Train a PixelRNN: `python -m pixelrnn.train --arch diagonal_bilstm --dataset binarized_mnist --minutes 5`.

Writes OUT/config.json + model.safetensors (PyTorchModelHubMixin), metrics.json (test NLL on
the full test split in the paper's unit; a class-conditional run's on-class rate), samples.png,
and training_state.safetensors/.json
to resume from (`--resume`). Runs under `torchrun --nproc_per_node N` with
DistributedDataParallel: each step's global batch is split across the processes.

Read `main` first: set up (`set_up`), train (`train_loop`, which calls `validate`), finish (`final_metrics`,
`save_outputs`). The pieces live in `pixelrnn.training`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pixelrnn.card import write_model_card
from pixelrnn.checkpoints import ON_CLASS_SHEET, CheckpointError, load_folder
from pixelrnn.classify import ON_CLASS_SAMPLES, measure_on_class
from pixelrnn.data import DATASETS, DEFAULT_DATA_DIR
from pixelrnn.evaluate import class_scores, mean_nll
from pixelrnn.generate import image_grid
from pixelrnn.model import ARCHS, Model, ModelConfig, bits_per_dim, build_model, paper_config
from pixelrnn.plots import learning_curve
from pixelrnn.sampling import sample
from pixelrnn.training import (
    Averaged,
    Batches,
    LogProb,
    PausableClock,
    Run,
    TrainStep,
    better_weights,
    device_name,
    learning_rate,
    load_splits,
    load_training_state,
    restore_generators,
    save_training_state,
    start_processes,
)


def count(text: str) -> int:
    """An argparse type: a whole number >= 0 (what is drawn at the end of a run is checked before it starts)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


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
    p.add_argument("--small-layers", type=int, default=None,
                   help="Multi-Scale: the small image's layers (default: --layers)")
    p.add_argument("--class-maps", type=int, default=None,
                   help="--conditional: a learned map of this many channels per class, a location-dependent bias")
    p.add_argument("--class-weight", type=float, default=0.0, help="--conditional: add this times log p(y | x) "
                   "(Bayes' rule on the model's own likelihoods) to the objective log p(x | y) (0: likelihood only); the "
                   "train loss shown then includes it; validation scores it with the exact posterior (one pass per class) and "
                   "selects the weights by it")
    p.add_argument("--class-negatives", type=count, default=0, help="--class-weight: other classes per image in "
                   "p(y | x), drawn at random (0: all; each costs one more forward and backward pass)")
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
                   help="length of the run (and of the lr schedule) in training hours, across resumes (a pause by "
                        "SIGTSTP does not count)")
    p.add_argument("--minutes", type=float, default=0.0, help="time budget of this call (0: none); --resume goes on")
    p.add_argument("--patience", type=int, default=0, help="stop after N evaluations without improvement (0: never)")
    p.add_argument("--eval-every", type=int, default=500, help="steps between validation evaluations")
    p.add_argument("--eval-images", type=int, default=2000, help="random validation images per evaluation (0: all)")
    p.add_argument("--test-limit", type=int, default=0, help="final evaluation on the first N only (0: all)")
    p.add_argument("--samples", type=count, default=16, help="samples drawn into samples.png (0: none)")
    p.add_argument("--on-class", type=count, default=ON_CLASS_SAMPLES, help="--conditional: samples per class drawn "
                   "at the end to measure the on-class rate with checkpoints/classifiers (pixelrnn.classify; 0: none)")
    p.add_argument("--init", type=Path, default=None, help="fine-tune: start from this checkpoint folder's weights "
                   "(the same model; a fresh optimizer and schedule)")
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


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The paper's model for --dataset and --arch (`paper_config`), with the sizes the options give."""
    binarized = args.dataset == "mnist" and args.binarize  # dynamically binarized MNIST: binarized MNIST's model
    info = DATASETS[args.dataset]
    return paper_config("binarized_mnist" if binarized else args.dataset, args.arch, hidden=args.hidden,
                        layers=args.layers, out_hidden=args.out_hidden, factor=args.factor or None,
                        small_layers=args.small_layers, num_classes=info.num_classes if args.conditional else None,
                        class_maps=args.class_maps,
                        skip=not args.no_skip, dropout=args.dropout)


STATE_KEYS = ("step", "epoch", "wall_time_s", "history", "best", "bad_evals", "settings", "changes")
PER_CALL = ("resume", "no_progress", "out", "data_dir", "config", "minutes")  # options that do not define a run


def run_settings(args: argparse.Namespace) -> dict:
    """The options that define a run (and its config file), as JSON values."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in PER_CALL}


def with_defaults(settings: dict) -> dict:
    """Run settings with the options newer than them at their defaults (what they were when the settings were saved)."""
    return {**run_settings(parse_args([])), **settings}


def model_shape(config: ModelConfig) -> dict:
    """A model's config but its dropout, which a resume or a fine-tune may change."""
    return {k: v for k, v in config.to_dict().items() if k != "dropout"}


def shape_of(settings: dict) -> dict:
    """The model that run settings build (dropout aside)."""
    return model_shape(model_config(argparse.Namespace(**with_defaults(settings))))


def start_from(model: Model, args: argparse.Namespace) -> None:
    """--init: load a checkpoint folder's weights into the model (before its moving average starts from them)."""
    try:
        start = load_folder(args.init)
    except CheckpointError as err:
        raise SystemExit(f"--init: {err}") from err
    theirs, ours = model_shape(start.config), model_shape(model_config(args))
    if theirs != ours:
        raise SystemExit(f"--init {args.init} holds another model: {theirs}, not {ours}")
    model.load_state_dict(start.state_dict())


def set_up(args: argparse.Namespace, use_graph: bool) -> Run:
    """Data, model, optimizer and moving average; resumed from --out's training state with --resume."""
    rank, world, device = start_processes(args)
    torch.manual_seed(args.seed)
    if args.conditional and DATASETS[args.dataset].num_classes is None:
        raise SystemExit(f"{args.dataset} has no labels: drop --conditional")
    if args.class_weight and not args.conditional:
        raise SystemExit("--class-weight needs a class-conditional run (--conditional)")
    if args.binarize and args.dataset != "mnist":
        raise SystemExit("--binarize applies to --dataset mnist only")
    splits = load_splits(args, device)
    model = build_model(model_config(args))
    if args.init is not None:
        start_from(model, args)
    model = model.to(device)
    if device.type == "cuda" and args.arch == "pixelcnn":
        model = model.to(memory_format=torch.channels_last)
    lr = torch.tensor(args.lr, device=device) if use_graph else args.lr  # a graph reads the lr from the device
    optimizer = (torch.optim.Adam if args.optimizer == "adam" else torch.optim.RMSprop)(
        model.parameters(), lr=lr, capturable=use_graph)
    state = {"step": 0, "epoch": 0.0, "wall_time_s": 0.0, "history": [], "best": None, "bad_evals": 0,
             "settings": run_settings(args), "changes": []}
    run = Run(args, rank, world, device, splits, model, optimizer, Averaged(model, args.ema), state)
    args.out.mkdir(parents=True, exist_ok=True)
    if run.max_steps() == 0 and not args.hours:
        raise SystemExit("the run has no length: give --max-steps, --hours or --epochs above 0")
    return run


def resume(run: Run) -> dict[str, Tensor]:
    """Continue from --out's training state: counters, weights, optimizer, best weights -> the random generators'
    saved states (so that the resumed run draws the batches an uninterrupted one would)."""
    args, settings = run.args, run.state["settings"]
    saved = json.loads((args.out / "training_state.json").read_text()).get("settings", {})
    if saved and shape_of(saved) != shape_of(settings):
        raise SystemExit(f"{args.out} holds another model: {shape_of(saved)}, not {shape_of(settings)}")
    loaded, weights, rng = load_training_state(args.out, run.optimizer)
    before = with_defaults(saved) if saved else settings
    changed = {k: [before.get(k), v] for k, v in settings.items() if before.get(k) != v}
    run.state.update({**loaded, "settings": settings})  # states saved before settings were kept: no changes list
    if changed:  # e.g. a longer --hours: recorded, because the run no longer equals its config from scratch
        print(f"resuming at step {run.state['step']} with changed settings (old, new): {changed}")
        run.state["changes"].append({"step": run.state["step"], "changed": changed})
    if "device" in changed:  # the batch generator lives on the device: its saved state does not fit another
        rng.pop("batches", None)
        rng.pop("cuda", None)
    run.weights.restore(weights)
    best, splits = run.state["best"], run.splits
    if best is not None and (best.get("valid_images"), best.get("eval_images", len(splits.quick_x)),
                             best.get("class_weight", 0.0)) != (len(splits.valid_x), len(splits.quick_x),
                                                                args.class_weight):
        run.state["best"] = None  # another validation set or subset (other CIFAR quarters) or score: compare afresh
    if run.state["best"] is not None and (args.out / "best.safetensors").exists():
        run.best = load_file(args.out / "best.safetensors", device=str(run.device))
    return rng


def save_state(run: Run, batches: Batches) -> None:
    """training_state.safetensors/.json in --out: what --resume continues from."""
    run.state["wall_time_s"] = run.earlier_s + run.clock.seconds()  # evaluations' time counts too
    rng = {"batches": batches.generator.get_state(), "torch": torch.get_rng_state()}
    if run.device.type == "cuda":  # dropout on the GPU
        rng["cuda"] = torch.cuda.get_rng_state(run.device)
    save_training_state(run.args.out, run.optimizer, {k: run.state[k] for k in STATE_KEYS}, run.weights.tensors(),
                        rng)


def select(state: dict, record: dict, valid_images: int, class_weight: float = 0.0) -> str | None:
    """Model selection: "raw" or "ema" if this evaluation's better weights are the best yet (recorded in state),
    else None (counted towards --patience; so is a diverged, non-finite evaluation). The score is the validation
    likelihood, or a hybrid run's objective (record's objective_raw/_ema) when class_weight > 0."""
    score_of = "objective" if class_weight else "valid"
    which = better_weights(record, score_of)
    score = record[f"{score_of}_{which}"]
    if not math.isfinite(score) or (state["best"] is not None and not score < state["best"]["valid"]):
        state["bad_evals"] += 1
        return None
    state["best"] = {"valid": score, "step": state["step"], "weights": which, "valid_images": valid_images,
                     "eval_images": record["eval_images"], "class_weight": class_weight}
    state["bad_evals"] = 0
    return which


def validation_scores(run: Run) -> dict[str, float]:
    """The validation subset's likelihood ("valid", in the run's unit) under the weights in the model; for a hybrid
    run (--class-weight) also its objective ("objective", same unit: what selects its weights), -log p(y | x)
    ("class_nll", nats) and how often the posterior's most likely class is y ("class_accuracy"), exact (one pass per
    class)."""
    args, splits = run.args, run.splits
    if not args.class_weight:
        nll = mean_nll(run.model, splits.quick_x, splits.quick_y, 500, run.device, run.rank, run.world)
        return {"valid": run.in_unit(nll)}
    scores = class_scores(run.model, splits.quick_x, splits.quick_y, 50, run.device, run.rank, run.world)
    return {"valid": run.in_unit(scores["nll"]),
            "objective": run.in_unit(scores["nll"] + args.class_weight * scores["class_nll"]),
            "class_nll": scores["class_nll"], "class_accuracy": scores["class_accuracy"]}


def validate(run: Run, rate: float, train_loss: float, grad_norm: float) -> None:
    """Score the raw and the averaged weights on the validation subset; keep the better if it is the best yet."""
    state, splits = run.state, run.splits
    record = {"step": state["step"], "images": state["step"] * run.args.batch_size,
              "hours": round(state["wall_time_s"] / 3600, 4), "lr": rate,
              "train_loss": run.in_unit(train_loss * run.dims), "grad_norm": grad_norm}
    for which in ("raw", "ema") if run.weights.ema is not None else ("raw",):
        with run.weights.swapped_in(which):
            record.update({f"{key}_{which}": value for key, value in validation_scores(run).items()})
    weight = run.args.class_weight
    which = select(state, {**record, "eval_images": len(splits.quick_x)}, len(splits.valid_x), weight)
    if which is not None:
        with run.weights.swapped_in(which):
            run.best = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        if run.is_main:
            save_file({k: v.contiguous().cpu() for k, v in run.best.items()}, run.args.out / "best.safetensors")
    state["history"].append(record)
    if run.is_main:
        run.bar.write(f"step {state['step']}: valid {record['valid_raw']:.3f}"
                      + (f" (EMA {record['valid_ema']:.3f})" if "valid_ema" in record else "")
                      + f" {run.unit} on {len(splits.quick_x)} validation images; train {'objective ' * bool(weight)}"
                      + f"{record['train_loss']:.3f}"
                      + (f"; objective {record['objective_raw']:.3f}, posterior right on "
                         f"{record['class_accuracy_raw']:.1%} (raw)" if weight else ""))


def should_stop(run: Run, budget_s: float) -> str | None:
    """Why the run stops now ("done", "early stop", "budget" for this call's --minutes), or None. Under DDP every
    process takes the same decision, on the slowest clock."""
    state = run.state
    state["wall_time_s"] = run.earlier_s + run.clock.seconds()
    out_of_time = run.clock.seconds() > budget_s
    if run.world > 1:
        shared = torch.tensor([state["wall_time_s"], float(out_of_time)], dtype=torch.float64, device=run.device)
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        state["wall_time_s"], out_of_time = shared[0].item(), bool(shared[1].item())
    if run.progress() >= 1:
        return "done"
    if run.args.patience and state["bad_evals"] >= run.args.patience:
        return "early stop"
    return "budget" if out_of_time else None


def train_loop(run: Run, step_fn: TrainStep, batches: Batches) -> str:
    """Train until the run is done, stops early or this call's --minutes are spent -> why it stopped."""
    args, state = run.args, run.state
    budget_s = args.minutes * 60 if args.minutes else math.inf
    run.clock, run.earlier_s, first_step = PausableClock(), state["wall_time_s"], state["step"]
    running = []  # (loss, grad norm) tensors since the last log, read in one sync
    rate = mean_loss = mean_norm = math.nan
    run.model.train()
    while (stopped := should_stop(run, budget_s)) is None:
        rate = learning_rate(args, state["step"], run.progress())
        for group in run.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(rate)
            else:
                group["lr"] = rate
        batches.next()
        running.append(torch.stack(step_fn(state["step"])))
        state["step"] += 1
        state["epoch"] = state["step"] * args.batch_size / len(run.splits.train_x)
        run.bar.update()
        evaluating = args.eval_every and state["step"] % args.eval_every == 0
        if state["step"] % 50 == 0 or evaluating:
            mean_loss, mean_norm = torch.stack(running).float().mean(0).tolist()
            running.clear()
            run.bar.set_postfix({run.unit: f"{run.in_unit(mean_loss * run.dims):.3f}", "grad": f"{mean_norm:.3g}",
                                 "lr": f"{rate:.2e}", "epoch": f"{state['epoch']:.2f}"})
        if evaluating:
            validate(run, rate, mean_loss, mean_norm)
            if run.is_main:
                save_state(run, batches)
    if stopped != "budget" and args.eval_every and state["step"] > first_step and state["step"] % args.eval_every:
        # the steps since the last evaluation ran at the lowest lr: score them too before choosing what ships
        if running:
            mean_loss, mean_norm = torch.stack(running).float().mean(0).tolist()
        validate(run, rate, mean_loss, mean_norm)
    return stopped


def final_metrics(run: Run, stopped: str) -> dict:
    """Ship the best evaluated weights (raw or EMA; else the current average), score them on the whole validation
    split and, when the run is finished, once on the test split -> metrics.json's contents."""
    args, state, splits, model = run.args, run.state, run.splits, run.model
    if run.best is not None:
        model.load_state_dict(run.best)
    elif run.weights.ema is not None:
        with torch.no_grad():
            torch._foreach_copy_(list(model.parameters()), run.weights.ema)
    model.eval()
    show = run.is_main and not args.no_progress
    valid_nll = mean_nll(model, splits.valid_x, splits.valid_y, 500, run.device, run.rank, run.world, progress=show)
    device = device_name(run.device)
    metrics = {
        "dataset": args.dataset + ("_dynamic_binarized" if args.binarize else ""),
        "arch": args.arch, "multiscale_factor": args.factor or None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "unit": run.unit, "valid_nll_nats": valid_nll, "valid_bits_per_dim": bits_per_dim(valid_nll, run.dims),
        "valid_images": len(splits.valid_x),
        "train_images": len(splits.train_x), "images_seen": state["step"] * args.batch_size,
        "steps": state["step"], "epochs": state["epoch"], "batch_size": args.batch_size,
        "wall_time_s": round(state["wall_time_s"], 1), "hours": round(state["wall_time_s"] / 3600, 3),
        "device": device if run.world == 1 else f"{run.world} x {device}", "finished": stopped != "budget",
        "stopped": stopped,
        "selected": state["best"], "config": state["settings"], "changes": state["changes"],
        "history": state["history"],
    }
    if metrics["finished"]:  # the test split is evaluated once, at the end
        test_nll = mean_nll(model, splits.test_x, splits.test_y, 500, run.device, run.rank, run.world, progress=show)
        metrics.update({"test_nll_nats": test_nll, "test_bits_per_dim": bits_per_dim(test_nll, run.dims),
                        "test_images": len(splits.test_x)})
        if args.conditional and args.on_class and run.is_main:  # does "pick a class" give the class?
            try:
                metrics["on_class"] = measure_on_class(model, args.dataset, per_class=args.on_class,
                                                       sheet=args.out / ON_CLASS_SHEET)
            except CheckpointError as err:
                print(f"on-class rate not measured: {err}")
    return metrics


def save_outputs(run: Run, metrics: dict) -> None:
    """The checkpoint folder: weights and config, metrics, samples, learning curve and model card."""
    args, model, out = run.args, run.model, run.args.out
    model.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if args.samples and metrics["finished"]:
        classes = DATASETS[args.dataset].num_classes
        y = torch.arange(args.samples, device=run.device) % classes if args.conditional else None
        images = sample(model, args.samples, y=y, seed=args.seed)
        image_grid(images, run.splits.levels, columns=math.ceil(args.samples**0.5)).save(out / "samples.png")
    title = (f"{args.arch} on {metrics['dataset']}; validation on {len(run.splits.quick_x):,} of "
             f"{len(run.splits.valid_x):,} images")
    learning_curve(run.state["history"], run.unit, title).save(out / "learning_curve.png")
    write_model_card(out)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    use_graph = args.cuda_graph and args.device.startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) == 1
    bf16 = args.device.startswith("cuda") if args.bf16 is None else args.bf16
    run = set_up(args, use_graph)
    rng = resume(run) if args.resume and (args.out / "training_state.json").exists() else {}
    splits, state = run.splits, run.state
    if run.is_main:
        print(f"{args.arch} on {args.dataset}: {sum(p.numel() for p in run.model.parameters()):,} parameters, "
              f"{len(splits.train_x)} train / {len(splits.valid_x)} validation / {len(splits.test_x)} test images, "
              f"batch {args.batch_size} on {run.world} x {device_name(run.device)}"
              f"{', bf16' if bf16 else ''}{', CUDA graph' if use_graph else ''}")
    batches = Batches(args, splits, run.rank, run.world, run.device, state["step"])
    batches.next()  # the graph captures a step on real data
    objective = LogProb(run.model, args.class_weight, args.class_negatives)
    trained = DistributedDataParallel(objective) if run.world > 1 else objective
    step_fn = TrainStep(trained, run.model, run.optimizer, run.weights.ema, args, run.dims, batches.x, batches.y,
                        run.device, use_graph, bf16)
    restore_generators(rng, batches, run.device)
    run.bar = tqdm(total=run.max_steps() or None, initial=state["step"], desc="train",
                   disable=not run.is_main or args.no_progress)
    stopped = train_loop(run, step_fn, batches)
    run.bar.close()
    if run.is_main:
        save_state(run, batches)
    metrics = final_metrics(run, stopped)
    if run.is_main:
        save_outputs(run, metrics)
        result = (f"test NLL {run.in_unit(metrics['test_nll_nats']):.3f} {run.unit} on {len(splits.test_x)} test "
                  f"images" if metrics["finished"] else f"not finished ({run.progress():.0%}): validation only")
        print(f"{result}; validation {run.in_unit(metrics['valid_nll_nats']):.3f} {run.unit} after {state['step']} "
              f"steps ({state['epoch']:.2f} epochs, {state['wall_time_s']:.0f} s); saved to {args.out}")
    if run.world > 1:  # every rank reaches the end before any tears the group down (gloo can abort otherwise:
        dist.barrier()  # "terminate called without an active exception" in a rank that left first, seen in CI)
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
