"""The Hub model card of a checkpoint folder: README.md from config.json and metrics.json.

    python -m pixelrnn.hub card CHECKPOINT_DIR [--repo-id USER/NAME]

The card's text is the Jinja template model_card.md next to this file, rendered by huggingface_hub's
`ModelCard.from_template`; its YAML front matter is a `ModelCardData`. The helpers here turn metrics.json
into the values the template lays out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from pixelrnn.checkpoints import (
    CARD,
    CONFIG,
    LEARNING_CURVE,
    METRICS,
    ON_CLASS_SHEET,
    SAMPLES,
    CheckpointError,
    as_number,
    read_json,
    recorded_nll,
)
from pixelrnn.model import HUB_TAGS, MultiScalePixelRNN, PixelRNN

TEMPLATE = Path(__file__).resolve().with_name("model_card.md")
ARCH_NAMES = {"pixelcnn": "PixelCNN", "row_lstm": "Row LSTM", "diagonal_bilstm": "Diagonal BiLSTM"}
# Test NLL reported in the paper (van den Oord et al., 2016): Table 4 (nats) and Table 5 (bits/dim).
PAPER_RESULTS = {
    "binarized_mnist": ("nats", {"diagonal_bilstm": 79.20, "row_lstm": 80.54, "pixelcnn": 81.30}),
    "cifar10": ("bits/dim", {"diagonal_bilstm": 3.00, "row_lstm": 3.07, "pixelcnn": 3.14}),
}
DATASET_INFO = {  # name in metrics.json -> (display name, Hub dataset id)
    "binarized_mnist": ("Binarized MNIST", "ylecun/mnist"),
    "mnist": ("MNIST", "ylecun/mnist"),
    "mnist_dynamic_binarized": ("MNIST, dynamically binarized", "ylecun/mnist"),
    "cifar10": ("CIFAR-10", "uoft-cs/cifar10"),
}


def format_duration(seconds: float) -> str:
    """'42 s', '17 min' or '1.6 h': one unit per range, so that cards compare at a glance."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def device_text(device: str) -> str:
    """A metrics.json device as a reader wants it: '1 x cpu (x86_64, 1 threads)', as older runs recorded one
    process, -> 'cpu (x86_64, 1 thread)'; several processes keep their count ('2 x NVIDIA H200')."""
    return re.sub(r"\b1 threads\b", "1 thread", re.sub(r"^1 x ", "", str(device)))


def _count_parameters(config: dict) -> int | None:
    try:
        cls = MultiScalePixelRNN if "factor" in config else PixelRNN
        with torch.device("meta"):
            return sum(p.numel() for p in cls(**config).parameters())
    except (TypeError, ValueError):
        return None


def _dataset(metrics: dict) -> tuple[str | None, str | None, str | None]:
    """(name in metrics.json, display name, Hub dataset id) of the training data; Nones if not recorded."""
    dataset = str(metrics["dataset"]) if metrics.get("dataset") else None
    if dataset is None:
        return None, None, None
    return (dataset, *DATASET_INFO.get(dataset, (dataset, None)))


def _test_nll(metrics: dict) -> tuple[float | None, str, int, str]:
    """(recorded test NLL or None, its unit, the digits to show, the unit as the card writes it)."""
    value, unit = recorded_nll(metrics, "test")
    return value, unit, 2 if unit == "nats" else 3, "nats/image" if unit == "nats" else "bits/dim"


def card_data(metrics: dict, arch: str, factor: Any, conditional: bool, name: str) -> ModelCardData:
    """The card's YAML front matter: library, license, tags, pipeline, dataset and the test NLL as an eval result."""
    dataset, dataset_name, dataset_id = _dataset(metrics)
    value, _, digits, unit_label = _test_nll(metrics)
    # the Hub has no pipeline for class-conditional generation: such a model gets no pipeline tag, not a wrong one
    task = ("class-conditional-image-generation", "Class-conditional image generation") if conditional else (
        "unconditional-image-generation", "Image generation")
    eval_results = None
    if value is not None and dataset:
        eval_results = [EvalResult(task_type=task[0], task_name=task[1],
                                   dataset_type=dataset, dataset_name=dataset_name, dataset_split="test",
                                   metric_type="nll", metric_name=f"Test NLL ({unit_label})",
                                   metric_value=round(value, digits + 2))]
    tags = sorted({*HUB_TAGS, arch.replace("_", "-")} | ({"multi-scale"} if factor else set())
                  | ({"class-conditional"} if conditional else set()))
    return ModelCardData(library_name="pixelrnn", license="mit", pipeline_tag=None if conditional else task[0],
                         tags=tags, datasets=[dataset_id] if dataset_id else None,
                         model_name=name if eval_results else None,
                         eval_results=eval_results)


def results(metrics: dict, arch: str, factor: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """(rows of the card's results table, notes under it); no rows when metrics.json records no test NLL."""
    value, unit, digits, unit_label = _test_nll(metrics)
    if value is None:
        return [], []
    dataset, dataset_name, _ = _dataset(metrics)
    arch_name = ARCH_NAMES.get(arch, arch)
    images = metrics.get("test_images")
    on = f" on {images:,} test images" if isinstance(images, int) else ""
    rows = [("this checkpoint", f"**{value:.{digits}f} {unit_label}**{on}")]
    valid, _ = recorded_nll(metrics, "valid")
    if valid is not None:
        rows.append(("this checkpoint, validation split", f"{valid:.{digits}f} {unit_label}"))
    paper_unit, figures = PAPER_RESULTS.get(dataset, (None, {}))
    if paper_unit == unit and arch in figures and not factor:  # the paper reports no Multi-Scale MNIST figure
        rows.append((f"paper, {arch_name} ({'Table 4' if unit == 'nats' else 'Table 5'})",
                     f"{figures[arch]:.2f} {unit_label}"))
    notes = []
    if factor and arch in figures:
        notes.append(f"The paper reports no figure for a Multi-Scale model on {dataset_name}.")
    if not figures and dataset_name:
        notes.append(f"The paper reports no figure for {dataset_name}.")
    if dataset == "cifar10" and isinstance(images, int) and images < 10000:
        notes.append("The paper evaluates on the full 10,000-image CIFAR-10 test set.")
    bpd = as_number(metrics.get("test_bits_per_dim"))
    if unit == "nats" and bpd is not None:
        notes.append(f"In bits per dimension: {bpd:.4f}.")
    return rows, notes


def on_class_facts(on_class: Any) -> dict[str, Any] | None:
    """The card's values for a class-conditional model's on-class rate (metrics.json "on_class"), if measured."""
    if not isinstance(on_class, dict) or as_number(on_class.get("rate")) is None:
        return None
    accuracy = as_number(on_class.get("classifier_test_accuracy"))
    interval = on_class.get("interval")
    low, high = interval if isinstance(interval, list) and len(interval) == 2 else (None, None)
    return {"rate": f"{on_class['rate']:.1%}", "temperature": f"{on_class.get('temperature', 1):g}",
            "samples": f"{on_class.get('samples_per_class', '?')}",
            "accuracy": f"{accuracy:.2%}" if accuracy is not None else None,
            "interval": f"{low:.1%}-{high:.1%}" if None not in (as_number(low), as_number(high)) else None,
            "per_class": [f"{k}: {v:.0%}" for k, v in enumerate(on_class.get("per_class") or [])
                          if isinstance(v, int | float)]}


def architecture(config: dict, metrics: dict, model_kind: str, factor: Any) -> list[str]:
    """The card's architecture bullets from config.json, and the parameter count (recorded, else counted)."""
    lines = []
    if config:
        shape = f"{config.get('channels', '?')} x {config.get('height', '?')} x {config.get('width', '?')}"
        layers = config.get("layers", "?")
        lines.append(f"{model_kind}: {layers} residual layer{'' if layers == 1 else 's'} after a 7x7 mask-A "
                     f"convolution, h = {config.get('hidden', '?')} ({'with' if config.get('skip', True) else 'no'} "
                     f"skip connections), output layers of {config.get('out_hidden', '?')} features")
        lines.append(f"images {shape} (channels x height x width), a {config.get('levels', '?')}-way softmax "
                     f"per sub-pixel")
        if factor:
            small = config.get("small_layers") or layers
            lines.append(f"multi-scale: a small model ({small} residual layers) on the image subsampled by {factor}, "
                         f"conditioning the large one through a {config.get('cond_channels', '?')}-channel map")
        if config.get("num_classes"):
            maps = config.get("class_maps")
            lines.append(f"class-conditional over {config['num_classes']} classes" + (
                f", each with a learned {maps}-channel map (a location-dependent bias in every layer)" if maps else ""))
    parameters = metrics.get("parameters") or _count_parameters(config)
    if isinstance(parameters, int):
        lines.append(f"{parameters:,} parameters")
    return lines


def training(metrics: dict) -> tuple[list[str], list[str]]:
    """(facts of the training run, the settings a resume changed: 'at step N: key old -> new, ...') from metrics."""
    facts = []
    if as_number(metrics.get("steps")) is not None:
        facts.append(f"{int(metrics['steps']):,} steps")
    if as_number(metrics.get("epochs")) is not None:
        facts.append(f"{metrics['epochs']:.2f} epochs")
    if as_number(metrics.get("batch_size")) is not None:
        facts.append(f"batch size {int(metrics['batch_size'])}")
    if as_number(metrics.get("wall_time_s")) is not None:
        facts.append(f"{format_duration(metrics['wall_time_s'])} of training")
    if metrics.get("device"):
        facts.append(f"on {device_text(metrics['device'])}")
    settings = metrics.get("config") or {}  # the run's settings
    if isinstance(settings.get("init"), str):
        facts.insert(0, f"Fine-tuned from the weights of {settings['init']} (a fresh optimizer and schedule)")
    if settings.get("bf16") is True:
        facts.append("under bf16 autocast (evaluation in float32)")
    weight, negatives = settings.get("class_weight"), settings.get("class_negatives")
    if as_number(weight):
        others = f"y and {int(negatives)} other classes drawn per image" if as_number(negatives) else "every class"
        selected = metrics.get("selected") if isinstance(metrics.get("selected"), dict) else {}
        by = (", the weights selected by it on validation (exact posterior)" if selected.get("class_weight") == weight
              else "")
        facts.append(f"objective log p(x | y) + {weight:g} log p(y | x) (the class's posterior by Bayes' rule over "
                     f"{others}){by}")
    if isinstance(metrics.get("train_images"), int):
        facts.append(f"{metrics['train_images']:,} training images")
    changes = [c for c in metrics.get("changes") or [] if isinstance(c, dict) and isinstance(c.get("changed"), dict)]
    # resumed with other settings: the run differs from its config started from scratch
    said = [f"at step {c.get('step')}: " + ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in c["changed"].items()
                                                    if isinstance(v, list) and len(v) == 2) for c in changes]
    return facts, said


def write_model_card(folder: str | Path, repo_id: str | None = None) -> Path:
    """Write folder/README.md, a Hub model card built from config.json and metrics.json (both optional).

    `repo_id` goes into the usage snippet (default: the folder's name).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    config, metrics = read_json(folder / CONFIG), read_json(folder / METRICS)
    arch = str(metrics.get("arch") or config.get("arch") or "unknown")
    arch_name = ARCH_NAMES.get(arch, arch)
    factor = config.get("factor") or metrics.get("multiscale_factor")
    model_kind = f"Multi-Scale {arch_name}" if factor else arch_name
    conditional = bool(config.get("num_classes"))
    name = repo_id or folder.resolve().name
    rows, notes = results(metrics, arch, factor)
    facts, changes = training(metrics)
    on_class = on_class_facts(metrics.get("on_class"))
    card = ModelCard.from_template(
        card_data(metrics, arch, factor, conditional, name), template_path=str(TEMPLATE),
        title=model_kind if "PixelCNN" in model_kind else f"{model_kind} PixelRNN", model_kind=model_kind,
        dataset_name=_dataset(metrics)[1], results=rows, notes=notes, on_class=on_class,
        architecture=architecture(config, metrics, model_kind, factor), training=facts, changes=changes,
        samples=SAMPLES if (folder / SAMPLES).is_file() else None,
        on_class_sheet=ON_CLASS_SHEET if on_class and (folder / ON_CLASS_SHEET).is_file() else None,
        learning_curve=LEARNING_CURVE if (folder / LEARNING_CURVE).is_file() else None,
        name=name, multi_scale=bool(factor), conditional=conditional,
        hybrid=bool(as_number((metrics.get("config") or {}).get("class_weight"))))
    path = folder / CARD
    path.write_text(str(card), encoding="utf-8")
    return path
