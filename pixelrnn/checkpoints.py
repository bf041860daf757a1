"""Read and validate PixelRNN checkpoint folders, and load the model they hold.

A checkpoint is a folder with config.json (the model's constructor arguments, as written by
`save_pretrained`) and model.safetensors, plus optional metrics.json, samples.png and README.md.
Weights are read only from safetensors: pickle files (pytorch_model.bin, *.pt) can run
arbitrary code when loaded and are refused. Finding a checkpoint by name or Hub repo id is
pixelrnn.hub's job (`pixelrnn.load`).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from pixelrnn.model import ModelConfig, MultiScalePixelRNN, PixelRNN

CONFIG, WEIGHTS, METRICS, SAMPLES, CARD = "config.json", "model.safetensors", "metrics.json", "samples.png", "README.md"
LEARNING_CURVE = "learning_curve.png"
ON_CLASS_SHEET = "on_class.png"  # a conditional model's first samples per class, framed by the classifier's reading
PICKLE_WEIGHTS = ("pytorch_model.bin", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# Bounds on a config.json, checked before any model is built (the fields' own limits are ModelConfig's)
MAX_CONFIG_BYTES = 2**20
MAX_PARAMETERS = 100_000_000


class CheckpointError(ValueError):
    """A checkpoint cannot be found or is invalid (bad config, missing/corrupt/mismatched weights)."""


# --- reading a checkpoint folder -----------------------------------------------------------------

def read_config(path: str | Path) -> tuple[type[PixelRNN | MultiScalePixelRNN], dict[str, Any]]:
    """(model class, its config's fields: every ModelConfig field, defaults filled in) from a config.json,
    validated; CheckpointError if invalid."""
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
    unknown = sorted(set(config) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise CheckpointError(f"{path}: unknown model argument(s) {unknown}")
    try:
        config = ModelConfig(**config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid config: {err}") from err
    if config.too_large():
        raise CheckpointError(f"{path}: model too large for pixelrnn: {', '.join(config.too_large())}")
    cls = PixelRNN if config.factor is None else MultiScalePixelRNN
    try:
        with torch.device("meta"):  # validates the arguments without allocating weights
            parameters = sum(p.numel() for p in cls(config).parameters())
    except (ValueError, TypeError, RuntimeError, OverflowError) as err:
        raise CheckpointError(f"{path}: invalid config: {err}") from err
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: model too large for pixelrnn: {parameters:,} parameters "
                              f"(at most {MAX_PARAMETERS:,})")
    return cls, config.to_dict()


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


# --- reading metrics.json and other optional JSON ------------------------------------------------

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

