"""An image's likelihood under a model, what an independent classifier reads in samples, and model cards and the
models table."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

import pixelrnn
from pixelrnn.card import ARCH_NAMES, DATASET_INFO, PAPER_RESULTS, device_text, format_duration, on_class_facts
from pixelrnn.checkpoints import LEARNING_CURVE, ON_CLASS_SHEET, SAMPLES, CheckpointError, as_number, recorded_nll
from pixelrnn.classify import CLASSIFIERS_DIR, NO_CLASS, Classifier, load_classifier, predict
from pixelrnn.model import Model
from pixelrnn.ui.registry import ModelEntry, Registry
from pixelrnn.ui.settings import REPO_ROOT
from pixelrnn.ui.uploads import ModelSpec, PreparedImage, decode_image

log = logging.getLogger(__name__)


def class_log_likelihoods(model: Model, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log p(x | y) in nats for every class, (num_classes,)."""
    with torch.inference_mode():
        batch = x[None].expand(num_classes, *x.shape)
        return model.log_prob(batch, torch.arange(num_classes, device=x.device)).double().cpu()


CONFIDENT = 0.99  # a class posterior this high is reported as confident


def auto_classes(model: Model, x: torch.Tensor, mask: np.ndarray, names: tuple[str, ...], n: int, seed: int
                 ) -> tuple[torch.Tensor, str]:
    """"auto" class for n completions, as Bayes says: each completion's class is drawn from the posterior given
    the known pixels before the region -> (labels (n,), a sentence saying the posterior and how sure it is)."""
    posterior, known = pixelrnn.class_posterior(model, x, torch.from_numpy(mask))
    labels = torch.multinomial(posterior.float(), n, replacement=True, generator=torch.Generator().manual_seed(seed))
    top = posterior.argsort(descending=True)[:3].tolist()
    shown = ", ".join(f"{names[k]!r} {float(posterior[k]):.0%}" for k in top if posterior[k] >= 0.005)
    sure = ("confident" if float(posterior.max()) >= CONFIDENT else "uncertain: classes differ between completions"
            if known else "no known pixel comes before the region: the uniform prior")
    drawn = ", ".join(names[k] for k in labels.tolist())
    return labels, (f" Auto class ({sure}): the posterior given the {known} known pixels before the region is "
                    f"{shown}; each completion draws its class from it: {drawn}.")


@functools.cache
def classifier_of(dataset: str) -> tuple[Classifier, float | None] | None:
    """The independent classifier of a data set (checkpoints/classifiers/DATASET, `pixelrnn.classify`) and its test
    accuracy; None where there is none or it cannot be read (the status then says nothing of it)."""
    folder = CLASSIFIERS_DIR / dataset
    if not (folder / "model.safetensors").is_file():
        return None
    try:
        classifier, metrics = load_classifier(folder)
    except CheckpointError as error:  # a broken classifier must not break Generate: logged, and left out
        log.warning("classifier %s unreadable: %s", folder, error)
        return None
    return classifier, as_number(metrics.get("test_accuracy"))


def class_check(spec: ModelSpec, images: torch.Tensor, labels: list[int], on_class: Any = None) -> str:
    """What an independent classifier reads in images (n, C, H, W) drawn for classes `labels` (one each): a
    sentence for a status line, with the model's measured on-class rate (metrics.json "on_class") where given; ""
    where no classifier fits the model's images."""
    found = classifier_of(spec.dataset) if spec.dataset else None
    if found is None or (found[0].channels, found[0].levels) != (spec.channels, spec.levels):
        return ""
    classifier, accuracy = found
    read, names, one = predict(classifier, images.cpu()).tolist(), spec.class_names, len(set(labels)) == 1
    misses = [(f"#{k + 1} as {names[got]!r}" if got != NO_CLASS else f"#{k + 1} as none (nearly blank)")
              + ("" if one else f", drawn for {names[wanted]!r}")
              for k, (got, wanted) in enumerate(zip(read, labels, strict=True)) if got != wanted]
    target = repr(names[labels[0]]) if one else "the class it was drawn for"
    skill = f" ({accuracy:.1%} on the test split)" if accuracy is not None else ""
    facts = on_class_facts(on_class)
    measured = (f"; its card: {facts['rate']} of samples show their class at temperature {facts['temperature']}"
                if facts else "")
    return (f" An independent classifier{skill} reads {len(read) - len(misses)} of {len(read)} as {target}"
            + (f" ({'; '.join(misses)})" if misses else "") + f"{measured}.")


def maps_of(model: Model, x: torch.Tensor, y: int | None) -> dict[str, np.ndarray]:
    """Per-sub-pixel NLL and entropy (bits) and distributions, as numpy arrays."""
    return {k: v.float().cpu().numpy() for k, v in pixelrnn.likelihood_maps(model, x, y=y).items()}


@dataclass
class Analysis:
    """One image under one model."""

    pixels: np.ndarray  # (C, H, W) levels
    label: int | None  # class used (given or most likely)
    nll_nats: float
    maps: dict[str, np.ndarray]
    posterior: np.ndarray | None = None  # p(class | x) with a uniform prior
    marginal_nats: float | None = None  # -log p(x) with a uniform prior over classes
    notes: list[str] = field(default_factory=list)


def analyse(model: Model, spec: ModelSpec, prepared: PreparedImage, y: int | None) -> Analysis:
    device = next(model.parameters()).device
    x = prepared.tensor().to(device)
    posterior = marginal = None
    if spec.num_classes:
        per_class = class_log_likelihoods(model, x, spec.num_classes)
        log_joint = per_class - math.log(spec.num_classes)
        marginal = -float(torch.logsumexp(log_joint, 0))
        posterior = torch.softmax(log_joint, 0).numpy()
        if y is None:
            y = int(per_class.argmax())
        nll = -float(per_class[y])
    else:
        with torch.inference_mode():
            nll = -float(model.log_prob(x[None]))
    return Analysis(prepared.pixels, y, nll, maps_of(model, x, y), posterior, marginal, list(prepared.notes))


# --- model cards -----------------------------------------------------------------------------------------

def test_result(entry: ModelEntry) -> tuple[str, str]:
    """(this checkpoint's test NLL, the paper's figure for the same architecture and data) as text."""
    metrics = entry.metrics
    dataset = metrics.get("dataset")
    value, unit = recorded_nll(metrics, "test")
    ours = "not evaluated yet" if value is None else f"{value:.2f} nats" if unit == "nats" else f"{value:.3f} bits/dim"
    if value is not None and isinstance(metrics.get("test_images"), int):
        ours += f" ({metrics['test_images']:,} test images)"
    paper_unit, figures = PAPER_RESULTS.get(dataset, (None, {}))
    arch = entry.spec.arch if entry.spec else metrics.get("arch")
    paper = "–"
    multiscale = entry.spec.factor if entry.spec else metrics.get("multiscale_factor")
    if arch in figures and paper_unit == unit and not multiscale:  # the paper has no Multi-Scale MNIST figure
        paper = f"{figures[arch]:.2f} {'nats' if unit == 'nats' else 'bits/dim'} ({ARCH_NAMES.get(arch, arch)})"
        if entry.spec and entry.spec.num_classes:
            paper += ", unconditional"
    return ours, paper


def validation_result(entry: ModelEntry) -> str:
    """The selected weights' NLL on the validation split, as text ("–" if not recorded)."""
    value, unit = recorded_nll(entry.metrics, "valid")
    if value is None:
        return "–"
    return f"{value:.2f} nats" if unit == "nats" else f"{value:.3f} bits/dim"


def model_title(entry: ModelEntry) -> str:
    if entry.spec is None:
        return "(not loaded yet)" if entry.source == "hub" else "?"
    name = ARCH_NAMES.get(entry.spec.arch, entry.spec.arch)
    name = f"Multi-Scale {name}" if entry.spec.factor else name
    return name + (", class-conditional" if entry.spec.num_classes else "")


def model_status(registry: Registry, entry: ModelEntry) -> str:
    """A model's state for a Markdown table cell: ready, on the Hub, or why it cannot be used."""
    problem = registry.problem(entry.name)
    if problem is not None:
        return "⚠ " + problem.replace("|", "\\|").replace("\n", " ")
    return "on the Hub, loaded on first use" if entry.spec is None else "ready"


def models_table(registry: Registry) -> str:
    """Markdown table of every model, from its metadata and the registry's state only (nothing is loaded)."""
    if not registry.entries:
        return "No models found: put checkpoint folders into the checkpoints folder ($PIXELRNN_CHECKPOINTS)."
    rows = ["| model | architecture | data | parameters | test NLL | paper | training | status |",
            "|---|---|---|---|---|---|---|---|"]
    for entry in registry.entries.values():
        metrics = entry.metrics
        dataset = DATASET_INFO.get(metrics.get("dataset"), (metrics.get("dataset") or "?",))[0]
        params = f"{entry.parameters:,}" if entry.parameters else "?"
        ours, paper = test_result(entry)
        wall = as_number(metrics.get("wall_time_s"))
        training = f"{format_duration(wall)} on {device_text(metrics.get('device', '?'))}" if wall is not None else "?"
        rows.append(f"| `{entry.name}` | {model_title(entry)} | {dataset} | {params} | {ours} | {paper} | {training} | "
                    f"{model_status(registry, entry)} |")
    return "\n".join(rows)


def checkpoint_picture(entry: ModelEntry, filename: str) -> np.ndarray | None:
    """A picture shipped in a local checkpoint folder (samples.png, learning_curve.png, on_class.png), or None."""
    path = Path(entry.location) / filename
    if entry.source != "local" or not path.is_file():  # a regular file of the checkpoint, not an upload
        return None
    try:
        return np.asarray(decode_image(path.read_bytes(), "picture").convert("RGB"))
    except (gr.Error, OSError):
        return None


def class_shows(metrics: dict) -> str:
    """The card's answer to "does the class show?" for a class-conditional model: its measured on-class rate."""
    facts = on_class_facts(metrics.get("on_class"))
    if facts is None:
        return "not measured (`python -m pixelrnn.classify rate CHECKPOINT --update`)"
    interval = f" (95% interval {facts['interval']})" if facts["interval"] else ""
    return (f"**{facts['rate']}**{interval} of {facts['samples']} samples per class, drawn at temperature "
            f"{facts['temperature']}, are read as their class by an independent classifier")


def model_card(registry: Registry, name: Any
               ) -> tuple[str, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(markdown card, samples.png, learning_curve.png, on_class.png; each None if missing) of one model; a Hub
    model is loaded to read its files."""
    entry = registry.entry(name)
    if entry.source == "hub" and entry.spec is None:
        registry.load(name)
    spec, metrics, config = entry.spec, entry.metrics, entry.config
    ours, paper = test_result(entry)
    dataset = DATASET_INFO.get(metrics.get("dataset"), (metrics.get("dataset") or "unknown",))[0]
    layers = config.get("layers", "?")
    arch = f"{model_title(entry)}: {layers} layer{'' if layers == 1 else 's'}, h = {config.get('hidden', '?')}"
    if spec and spec.factor:
        arch += f", small image subsampled by {spec.factor}"
    params = entry.parameters
    training = []
    for key, text in (("steps", "{:,.0f} steps"), ("epochs", "{:.2f} epochs"), ("batch_size", "batch {:.0f}")):
        if as_number(metrics.get(key)) is not None:
            training.append(text.format(metrics[key]))
    if as_number(metrics.get("wall_time_s")) is not None:
        training.append(format_duration(metrics["wall_time_s"]))
    if metrics.get("device"):
        training.append(f"on {device_text(metrics['device'])}")
    if entry.source == "local":
        try:
            where = f"local folder `{Path(entry.location).resolve().relative_to(REPO_ROOT)}`"
        except ValueError:  # outside the app: its name only, no server path
            where = f"local folder `{entry.name}`"
    else:
        where = f"Hugging Face Hub [`{entry.location}`](https://huggingface.co/{entry.location})"
    classes = f"{spec.num_classes} classes: {', '.join(spec.class_names)}" if spec and spec.num_classes else "none"
    lines = [f"| Model | `{entry.name}` |", "|---|---|",
             f"| Architecture | {arch} |",
             f"| Data | {dataset}, {spec.describe() if spec else '?'} |",
             f"| Conditioning | {classes} |",
             *([f"| Does the class show? | {class_shows(metrics)} |"] if spec and spec.num_classes else []),
             f"| Parameters | {params:,} |" if isinstance(params, int) else "| Parameters | ? |",
             f"| Test NLL | **{ours}** |",
             f"| Validation NLL | {validation_result(entry)} |",
             f"| Paper (van den Oord et al., 2016) | {paper} |",
             f"| Training | {', '.join(training) or 'no record'} |",
             f"| Weights | {where} |",
             f"| Running on | {registry.device} |",
             f"| Status | {model_status(registry, entry)} |"]
    return ("\n".join(lines), checkpoint_picture(entry, SAMPLES), checkpoint_picture(entry, LEARNING_CURVE),
            checkpoint_picture(entry, ON_CLASS_SHEET))
