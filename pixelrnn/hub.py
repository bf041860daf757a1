"""Load PixelRNN checkpoints from folders or the Hugging Face Hub, write model cards, push to the Hub.

    model = load("diagonal_bilstm_mnist")       # checkpoints/<name>, a folder, or a Hub repo id
    python -m pixelrnn.hub card CHECKPOINT_DIR [--repo-id USER/NAME]
    python -m pixelrnn.hub push CHECKPOINT_DIR USER/NAME [--private]

A checkpoint is a folder with config.json (the model's constructor arguments, as written by
`save_pretrained`) and model.safetensors, plus optional metrics.json, samples.png and README.md.
Weights are read only from safetensors: pickle files (pytorch_model.bin, *.pt) can run
arbitrary code when loaded and are refused.

Hub settings (HF_ENDPOINT, HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN) are read from the
environment at call time, not only when huggingface_hub is imported.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import queue
import re
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCardData, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from pixelrnn.model import HUB_TAGS, MultiScalePixelRNN, PixelRNN

CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
PROBE_TIMEOUT_S = 2.0
CONFIG, WEIGHTS, METRICS, SAMPLES, CARD = "config.json", "model.safetensors", "metrics.json", "samples.png", "README.md"
LEARNING_CURVE = "learning_curve.png"
UPLOAD_FILES = (CONFIG, WEIGHTS, METRICS, CARD, SAMPLES, LEARNING_CURVE)
PICKLE_WEIGHTS = ("pytorch_model.bin", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# Bounds on a config.json, checked before any model is built (even on the meta device): far above the paper's
# models (CIFAR-10: 12 layers, h = 128; ImageNet 64x64), far below sizes that take seconds to build or GBs to load.
MAX_CONFIG_BYTES = 2**20
CONFIG_LIMITS = {"channels": 4, "levels": 256, "height": 256, "width": 256, "hidden": 1024, "layers": 64,
                 "out_hidden": 4096, "num_classes": 10_000, "cond_channels": 1024, "factor": 64}
MAX_PARAMETERS = 100_000_000

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


class CheckpointError(ValueError):
    """A checkpoint cannot be found or is invalid (bad config, missing/corrupt/mismatched weights)."""


class HubUnreachableError(CheckpointError, ConnectionError):
    """The Hub cannot be reached (or offline mode is on) and the checkpoint is not cached.

    Subclasses both CheckpointError and ConnectionError (an OSError), so either catches it.
    """


# --- Hub settings, read at call time -----------------------------------------------------------

def _env_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    """The Hub URL: $HF_ENDPOINT, else huggingface_hub's default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The Hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set."""
    if "HF_HUB_OFFLINE" in os.environ or "TRANSFORMERS_OFFLINE" in os.environ:
        return _env_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE


# --- resolving a name to a local folder ---------------------------------------------------------

def _local_folder(name: str) -> Path | None:
    """checkpoints/<name> (staying inside checkpoints/), then `name` as a folder path."""
    root = CHECKPOINTS_DIR.resolve()
    candidate = (root / name).resolve()
    if candidate != root and candidate.is_relative_to(root) and candidate.is_dir():
        return candidate
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def probe_hub(repo_id: str, endpoint: str | None = None, timeout: float | None = None) -> None:
    """HEAD {endpoint}/{repo_id}/resolve/main/config.json; raise HubUnreachableError if no HTTP answer.

    Any HTTP answer (even 404 or 401) counts as reachable, except a proxy or gateway failure (407, 502,
    503, 504). The request runs in a daemon thread, so not even a hanging DNS lookup can outlast
    `timeout` (default PROBE_TIMEOUT_S) by more than 0.5 s.
    """
    endpoint = endpoint or hub_endpoint()
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    url = f"{endpoint}/{repo_id}/resolve/main/{CONFIG}"
    result: queue.Queue[BaseException | None] = queue.Queue()

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # a redirect is an answer: do not follow it
            return None

    def _head() -> None:
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                pass
            result.put(None)
        except urllib.error.HTTPError as err:
            result.put(err if err.code in (407, 502, 503, 504) else None)
        except Exception as err:  # noqa: BLE001 - any failure to get an answer is reported below
            result.put(err)

    threading.Thread(target=_head, name="pixelrnn-hub-probe", daemon=True).start()
    try:
        error = result.get(timeout=timeout + 0.5)
    except queue.Empty:
        error = TimeoutError(f"no answer within {timeout:.1f} s")
    if error is not None:
        reason = f"HTTP {error.code}" if isinstance(error, urllib.error.HTTPError) else getattr(error, "reason", error)
        raise HubUnreachableError(
            f"cannot reach the Hugging Face Hub at {endpoint} to download {repo_id!r} ({reason}), and it is not "
            f"in the local cache ({hub_cache_dir()}). Check the network or HF_ENDPOINT, or pass a local folder."
        ) from error


def _download(
    repo_id: str, filename: str, revision: str | None, local_only: bool, optional: bool = False
) -> Path | None:
    """hf_hub_download with errors turned into CheckpointError; None if missing and (local_only or optional)."""
    endpoint = hub_endpoint()
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache_dir(), endpoint=endpoint,
                                    local_files_only=local_only, library_name="pixelrnn"))
    except RepositoryNotFoundError as err:
        raise CheckpointError(f"{repo_id!r}: no such model repo on {endpoint} (a private or gated repo needs "
                              f"HF_TOKEN), and no folder of that name in {CHECKPOINTS_DIR}") from err
    except RevisionNotFoundError as err:
        raise CheckpointError(f"{repo_id!r}: revision {revision!r} not found on {endpoint}") from err
    except RemoteEntryNotFoundError as err:
        if optional:
            return None
        hint = (" pixelrnn loads weights only from model.safetensors (pickle files can run arbitrary code)"
                if filename == WEIGHTS else " it is not a pixelrnn checkpoint")
        raise CheckpointError(f"{repo_id!r} on {endpoint} has no {filename}:{hint}") from err
    except LocalEntryNotFoundError as err:
        if local_only or optional:
            return None
        raise HubUnreachableError(f"downloading {filename} of {repo_id!r} from {endpoint} failed: {err}") from err
    except EntryNotFoundError:  # e.g. cached as known-missing
        if local_only or optional:
            return None
        raise
    except HfHubHTTPError as err:
        raise CheckpointError(f"downloading {filename} of {repo_id!r} from {endpoint} failed: {err}") from err


def _download_checkpoint(repo_id: str, local_only: bool) -> Path | None:
    """Snapshot folder holding config.json and model.safetensors of one commit, or None if not cached."""
    config = _download(repo_id, CONFIG, None, local_only)
    if config is None:
        return None
    commit = config.parent.name  # snapshots/<commit>/config.json: fetch the other files at that same commit
    revision = commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None
    weights = _download(repo_id, WEIGHTS, revision, local_only)
    if weights is None:
        return None
    _download(repo_id, METRICS, revision, local_only, optional=True)
    return config.parent


def resolve(name_or_path: str | Path) -> Path:
    """The local folder for a checkpoint name, downloading it from the Hub if needed.

    Order: checkpoints/<name> in the repo root, a local folder, the Hub cache, the Hub itself.
    Raises CheckpointError (HubUnreachableError when the Hub cannot be reached or offline mode is on).
    """
    name = str(name_or_path)
    folder = _local_folder(name)
    if folder is not None:
        return folder
    shipped = sorted(p.name for p in CHECKPOINTS_DIR.glob("*") if (p / CONFIG).is_file())
    unknown = (f"no model named {name!r}: the checkpoints here are {', '.join(shipped) or '(none)'}; a local "
               f"folder holding config.json and model.safetensors, or a Hugging Face Hub repo id 'user/name', "
               f"also work")
    if "/" not in name.strip("/"):  # a bare name is a checkpoint's, never a Hub id of ours
        raise CheckpointError(unknown)
    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise CheckpointError(unknown) from err
    cached = _download_checkpoint(name, local_only=True)
    if cached is not None:
        return cached
    if hub_offline():
        raise HubUnreachableError(f"{name!r} is not in the Hugging Face cache ({hub_cache_dir()}) and offline mode "
                                  f"is on (HF_HUB_OFFLINE=1): download it once online or pass a local folder")
    probe_hub(name)
    return _download_checkpoint(name, local_only=False)


# --- reading a checkpoint folder -----------------------------------------------------------------

def _constructor_keys(cls: type) -> set[str]:
    return {p for p in inspect.signature(cls.__init__).parameters if p != "self"}


def read_config(path: str | Path) -> tuple[type[PixelRNN | MultiScalePixelRNN], dict[str, Any]]:
    """(model class, constructor kwargs) from a config.json, validated; CheckpointError if invalid."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MB, not a model config")
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CheckpointError(f"{path.parent}: no {CONFIG}, so it is not a pixelrnn checkpoint") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: cannot read JSON ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object of model arguments, got {type(config).__name__}")
    cls = MultiScalePixelRNN if "factor" in config else PixelRNN
    unknown = sorted(set(config) - _constructor_keys(cls))
    if unknown:
        raise CheckpointError(f"{path}: unknown {cls.__name__} argument(s) {unknown}")
    if "skip" in config and not isinstance(config["skip"], bool):
        raise CheckpointError(f"{path}: invalid config: skip must be true or false, got {config['skip']!r}")
    too_large = [f"{key} = {config[key]} (at most {limit})" for key, limit in CONFIG_LIMITS.items()
                 if isinstance(config.get(key), int) and config[key] > limit]
    if too_large:
        raise CheckpointError(f"{path}: model too large for pixelrnn: {', '.join(too_large)}")
    try:
        with torch.device("meta"):  # validates the arguments without allocating weights
            parameters = sum(p.numel() for p in cls(**config).parameters())
    except (ValueError, TypeError, RuntimeError, OverflowError) as err:
        raise CheckpointError(f"{path}: invalid config: {err}") from err
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: model too large for pixelrnn: {parameters:,} parameters "
                              f"(at most {MAX_PARAMETERS:,})")
    return cls, config


def _check_weights(path: Path, expected: dict[str, torch.Size]) -> None:
    """Compare tensor names and shapes in a safetensors header with the model's, before reading data."""
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {key: torch.Size(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file (corrupt or truncated?): {err}") from err
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [f"{k}: shape {tuple(found[k])} in file, {tuple(shape)} in model"
                 for k, shape in expected.items() if k in found and found[k] != shape]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"{path} does not match its config.json: {'; '.join(problems[:5])}{more}")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, all finite; CheckpointError if it cannot be read or is not finite."""
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot read tensors (corrupt or truncated?): {err}") from err
    check_finite(state, path)
    return state


def check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """CheckpointError if any weight is NaN or infinite (a diverged run): such a model samples garbage and breaks
    the range coder, so it is never loaded."""
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"{path} has non-finite weights (NaN or infinite) in {', '.join(bad[:3])}{more}: "
                              f"the training run diverged; retrain or pick another checkpoint")


def pickle_weights(folder: str | Path) -> list[str]:
    """Names of pickle weight files (pytorch_model.bin, *.pt, ...) in a folder: never loaded, only reported."""
    return sorted({p.name for pattern in PICKLE_WEIGHTS for p in Path(folder).glob(pattern)})


def check_folder(folder: str | Path) -> tuple[type[PixelRNN | MultiScalePixelRNN], dict[str, Any]]:
    """Validate a checkpoint folder without reading its tensors -> (model class, config).

    Checks config.json (`read_config`, bounds included) and model.safetensors' header: tensor names and shapes
    against the model's, and that the file is complete. CheckpointError if anything is wrong, including pickle
    weights in place of model.safetensors.
    """
    folder = Path(folder)
    cls, config = read_config(folder / CONFIG)
    weights = folder / WEIGHTS
    if not weights.is_file():
        pickles = pickle_weights(folder)
        if pickles:
            raise CheckpointError(f"{folder}: refusing to load pickle weights {pickles} (unpickling can run arbitrary "
                                  f"code); pixelrnn loads only {WEIGHTS}. Convert them where you trust the file.")
        raise CheckpointError(f"{folder}: no {WEIGHTS}")
    with torch.device("meta"):
        expected = {k: v.shape for k, v in cls(**config).state_dict().items()}
    _check_weights(weights, expected)
    return cls, config


def load_folder(folder: str | Path, device: str | torch.device = "cpu") -> PixelRNN | MultiScalePixelRNN:
    """Build the model from folder/config.json and load folder/model.safetensors (eval mode)."""
    folder = Path(folder)
    cls, config = check_folder(folder)
    weights = folder / WEIGHTS
    state = read_weights(weights)
    model = cls(**config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights} does not match its config.json: {err}") from err
    return model.to(device).eval()


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> PixelRNN | MultiScalePixelRNN:
    """Load a checkpoint by name (checkpoints/<name>), folder path or Hub repo id, in eval mode.

    Raises CheckpointError with a clear message for anything missing or invalid, and
    HubUnreachableError (a CheckpointError and ConnectionError) when the Hub is needed but
    cannot be reached within ~PROBE_TIMEOUT_S or offline mode is on.
    """
    return load_folder(resolve(name_or_path), device)


# --- model card ------------------------------------------------------------------------------------

def read_json(path: Path) -> dict:
    """A JSON object from path, or {} if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def as_number(value: Any) -> float | None:
    """A JSON number as float; None for anything else (booleans included)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def recorded_nll(metrics: dict, split: str) -> tuple[float | None, str]:
    """(the recorded NLL of `split` ("test" or "valid") in the paper's unit, or None; that unit) from metrics.json:
    nats per image for binarized MNIST, bits/dim otherwise."""
    unit = metrics.get("unit")
    if unit not in ("nats", "bits/dim"):
        unit = "nats" if metrics.get("dataset") == "binarized_mnist" else "bits/dim"
    return as_number(metrics.get(f"{split}_nll_nats" if unit == "nats" else f"{split}_bits_per_dim")), unit


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


def on_class_lines(on_class: Any) -> list[str]:
    """Card lines for a class-conditional model's on-class rate (metrics.json "on_class"), if measured."""
    if not isinstance(on_class, dict) or as_number(on_class.get("rate")) is None:
        return []
    per_class = on_class.get("per_class") or []
    accuracy = as_number(on_class.get("classifier_test_accuracy"))
    return ["## Does the class show?", "",
            f"**{on_class['rate']:.1%}** of samples drawn for a class (at temperature {on_class.get('temperature', 1):g},"
            f" {on_class.get('samples_per_class', '?')} per class) are assigned to that class by an independent "
            f"classifier trained on the training split"
            + (f" ({accuracy:.2%} test accuracy)" if accuracy is not None else "") + ". Per class: "
            + ", ".join(f"{k}: {v:.0%}" for k, v in enumerate(per_class) if isinstance(v, int | float)) + ".",
            "", ("Re-measured by `python -m pixelrnn.evaluate CHECKPOINT_DIR --on-class` (the classifiers are in "
                 "checkpoints/classifiers/ of the pixelrnn repository)."), ""]


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
    model_name = f"Multi-Scale {arch_name}" if factor else arch_name
    title = model_name if "PixelCNN" in model_name else f"{model_name} PixelRNN"
    dataset = str(metrics["dataset"]) if metrics.get("dataset") else None
    dataset_name, dataset_id = DATASET_INFO.get(dataset, (dataset, None)) if dataset else (None, None)
    name = repo_id or folder.resolve().name

    value, unit = recorded_nll(metrics, "test")
    digits = 2 if unit == "nats" else 3
    unit_label = "nats/image" if unit == "nats" else "bits/dim"

    conditional = bool(config.get("num_classes"))
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
    data = ModelCardData(library_name="pixelrnn", license="mit", pipeline_tag=None if conditional else task[0],
                         tags=tags, datasets=[dataset_id] if dataset_id else None,
                         model_name=name if eval_results else None,
                         eval_results=eval_results)

    lines = [f"---\n{data.to_yaml()}\n---", "",
             f"# {title}" + (f" on {dataset_name}" if dataset_name else ""), "",
             (f"A {model_name} model from [Pixel Recurrent Neural Networks](https://arxiv.org/abs/1601.06759) "
              "(van den Oord, Kalchbrenner and Kavukcuoglu, 2016), implemented in PyTorch by the `pixelrnn` package."),
             ""]

    lines += ["## Results", ""]
    if value is not None:
        images = metrics.get("test_images")
        on = f" on {images:,} test images" if isinstance(images, int) else ""
        lines += ["| model | test NLL |", "|---|---|", f"| this checkpoint | **{value:.{digits}f} {unit_label}**{on} |"]
        valid, _ = recorded_nll(metrics, "valid")
        if valid is not None:
            lines.append(f"| this checkpoint, validation split | {valid:.{digits}f} {unit_label} |")
        paper_unit, figures = PAPER_RESULTS.get(dataset, (None, {}))
        if paper_unit == unit and arch in figures and not factor:  # the paper reports no Multi-Scale MNIST figure
            lines.append(f"| paper, {arch_name} ({'Table 4' if unit == 'nats' else 'Table 5'}) "
                         f"| {figures[arch]:.2f} {unit_label} |")
        lines.append("")
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
        if notes:
            lines += [" ".join(notes), ""]
    else:
        lines += ["No test result recorded (metrics.json missing or without `test_nll_nats`).", ""]

    lines += on_class_lines(metrics.get("on_class"))
    lines += ["## Architecture", ""]
    if config:
        shape = f"{config.get('channels', '?')} x {config.get('height', '?')} x {config.get('width', '?')}"
        layers = config.get("layers", "?")
        lines.append(f"- {model_name}: {layers} residual layer{'' if layers == 1 else 's'} after a 7x7 mask-A "
                     f"convolution, h = {config.get('hidden', '?')} ({'with' if config.get('skip', True) else 'no'} "
                     f"skip connections), output layers of {config.get('out_hidden', '?')} features")
        lines.append(f"- images {shape} (channels x height x width), a {config.get('levels', '?')}-way softmax "
                     f"per sub-pixel")
        if factor:
            lines.append(f"- multi-scale: a small model on the image subsampled by {factor}, conditioning the "
                         f"large one through a {config.get('cond_channels', '?')}-channel map")
        if config.get("num_classes"):
            lines.append(f"- class-conditional over {config['num_classes']} classes")
    parameters = metrics.get("parameters") or _count_parameters(config)
    if isinstance(parameters, int):
        lines.append(f"- {parameters:,} parameters")
    lines.append("")

    training = []
    if as_number(metrics.get("steps")) is not None:
        training.append(f"{int(metrics['steps']):,} steps")
    if as_number(metrics.get("epochs")) is not None:
        training.append(f"{metrics['epochs']:.2f} epochs")
    if as_number(metrics.get("batch_size")) is not None:
        training.append(f"batch size {int(metrics['batch_size'])}")
    if as_number(metrics.get("wall_time_s")) is not None:
        training.append(f"{format_duration(metrics['wall_time_s'])} of training")
    if metrics.get("device"):
        training.append(f"on {device_text(metrics['device'])}")
    if (metrics.get("config") or {}).get("bf16") is True:
        training.append("under bf16 autocast (evaluation in float32)")
    if isinstance(metrics.get("train_images"), int):
        training.append(f"{metrics['train_images']:,} training images")
    if training:
        lines += ["## Training", "", ", ".join(training) + ".", ""]
    changes = [c for c in metrics.get("changes") or [] if isinstance(c, dict) and isinstance(c.get("changed"), dict)]
    if changes:  # resumed with other settings: the run differs from its config started from scratch
        said = [f"at step {c.get('step')}: " + ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in c["changed"].items()
                                                        if isinstance(v, list) and len(v) == 2) for c in changes]
        lines += ["Resumed with changed settings " + "; ".join(said) + ".", ""]

    if (folder / SAMPLES).is_file():
        lines += ["## Samples", "", "![samples](samples.png)", ""]
    if (folder / LEARNING_CURVE).is_file():
        lines += ["## Learning curve", "",
                  "Validation NLL during training (raw and averaged weights); the best of them are the weights here.",
                  "", f"![learning curve]({LEARNING_CURVE})", ""]

    lines += ["## Usage", "", "```python", "import torch", "import pixelrnn", "",
              f'model = pixelrnn.load("{name}")  # a Hub repo id, a local folder or a name in checkpoints/']
    m = "model.large" if factor else "model"  # the full-size PixelRNN holds the image shape
    lines += [f"x = torch.randint(0, {m}.levels, (1, {m}.channels, {m}.height, {m}.width))"]
    if config.get("num_classes"):
        lines += ["y = torch.tensor([0])", "print(model.log_prob(x, y))  # log-likelihood in nats per image"]
    else:
        lines += ["print(model.log_prob(x))  # log-likelihood in nats per image"]
    lines += ["```", "", "Weights are stored as safetensors only; `pixelrnn.load` never unpickles files.", ""]

    path = folder / CARD
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# --- pushing -------------------------------------------------------------------------------------------

def push(folder: str | Path, repo_id: str, private: bool = False, message: str | None = None) -> str:
    """Validate a checkpoint folder, refresh its model card and commit its files to a Hub model repo.

    Uploads config.json, model.safetensors, metrics.json, README.md, samples.png and learning_curve.png (those present)
    in one commit; `private` applies when the repo is created. Returns the commit URL.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    load_folder(folder)
    write_model_card(folder, repo_id)
    api = HfApi(endpoint=hub_endpoint())
    api.create_repo(repo_id, private=private, exist_ok=True)
    files = [name for name in UPLOAD_FILES if (folder / name).is_file()]
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=folder / name) for name in files]
    info = api.create_commit(repo_id, operations=operations,
                             commit_message=message or f"Upload pixelrnn checkpoint ({', '.join(files)})")
    return info.commit_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixelrnn.hub", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    card = commands.add_parser("card", help="(re)write CHECKPOINT_DIR/README.md")
    card.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_DIR")
    card.add_argument("--repo-id", help="repo id for the usage snippet (default: the folder's name)")
    upload = commands.add_parser("push", help="validate, write the card and upload a checkpoint to the Hub")
    upload.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_DIR")
    upload.add_argument("repo_id", metavar="REPO_ID")
    upload.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    upload.add_argument("--message", help="commit message")
    args = parser.parse_args(argv)
    try:
        if args.command == "card":
            print(write_model_card(args.checkpoint, args.repo_id))
        else:
            print(push(args.checkpoint, args.repo_id, private=args.private, message=args.message))
    except (CheckpointError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
