"""Parsing the endpoints' parameters (numbers, classes, modes) with clear messages."""

from __future__ import annotations

import math
import numbers
import secrets
from typing import Any

import gradio as gr

from pixelrnn.ui.settings import MAX_PACE_S, MAX_TEMPERATURE
from pixelrnn.ui.uploads import ModelSpec

MODES = ("plain", "context-aware (SMC)")
AUTO_CLASS = "auto (from the image)"  # Complete draws classes from the posterior; Inspect reports it
LEGACY_AUTO = "auto (most likely)"  # its earlier name, still accepted

MAX_NUMBER_CHARS = 40  # longer text is not a number a person typed


def shown(value: Any) -> str:
    """repr(value) for an error message, cut short (a 400-digit number would drown the sentence)."""
    text = repr(value)
    return text if len(text) <= MAX_NUMBER_CHARS else text[: MAX_NUMBER_CHARS - 1] + "…"


def _number(value: Any) -> int | float | None:
    """A number, or the text of one -> an exact int (any size) or a float (possibly inf or nan); None otherwise.

    Booleans are not numbers here, and text longer than MAX_NUMBER_CHARS is refused before it is parsed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str) and len(value.strip()) <= MAX_NUMBER_CHARS:
        text = value.strip()
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return None


def _whole(value: Any) -> int | None:
    """A whole number (an int, an integral float or the text of one) -> int; None for anything else (inf, nan)."""
    number = _number(value)
    if isinstance(number, float) and number.is_integer():  # False for inf and nan
        return int(number)
    return number if isinstance(number, int) else None


def _real(value: Any) -> float:
    """A number (or its text) -> float: a huge int becomes inf, anything else that is not a number nan."""
    number = _number(value)
    if number is None:
        return math.nan
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def parse_int(value: Any, name: str, low: int, high: int) -> int:
    """A whole number in [low, high], or gr.Error naming the allowed range (inf, nan and huge values included)."""
    number = _whole(value)
    if number is None or not low <= number <= high:
        raise gr.Error(f"{name} must be a whole number from {low} to {high} (got {shown(value)}).")
    return number


def parse_temperature(value: Any) -> float:
    number = _real(value)
    if not (math.isfinite(number) and 0 < number <= MAX_TEMPERATURE):
        raise gr.Error(f"Temperature must be a number above 0 and at most {MAX_TEMPERATURE:g} (got {shown(value)}): "
                       f"1 samples the model as trained, lower is more conservative, higher more random.")
    return number


def parse_seed(value: Any) -> int:
    """A seed in [0, 2**32); None, "" or -1 -> a random one."""
    if value is None or (isinstance(value, str) and not value.strip()) or _whole(value) == -1:
        return secrets.randbelow(2**32)
    return parse_int(value, "Seed", 0, 2**32 - 1)


def parse_pace(value: Any) -> float:
    number = 0.0 if value is None else _real(value)
    if not (math.isfinite(number) and 0 <= number <= MAX_PACE_S):
        raise gr.Error(f"Animation length must be from 0 to {MAX_PACE_S:g} seconds (got {shown(value)}).")
    return number


def parse_mode(value: Any) -> bool:
    """Completion mode -> True for context-aware (SMC)."""
    text = str(value or "plain").strip().lower()
    if text == "plain":
        return False
    if text in ("smc", "context-aware", MODES[1].lower()):
        return True
    raise gr.Error(f"Completion mode must be {MODES[0]!r} or {MODES[1]!r} (got {value!r}).")


def parse_class(value: Any, spec: ModelSpec, allow_auto: bool = False) -> int | None:
    """A class name or index -> index; None for unconditional models (and for "auto" when allowed)."""
    if spec.num_classes is None:
        return None
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto", AUTO_CLASS, LEGACY_AUTO)):
        if allow_auto:
            return None
        raise gr.Error(f"This model is class-conditional: choose a class ({', '.join(spec.class_names[:10])}).")
    text = str(value).strip()
    if text in spec.class_names:
        return spec.class_names.index(text)
    if _number(value) is None:
        raise gr.Error(f"Unknown class {shown(value)}: choose one of {', '.join(spec.class_names)}.")
    index = _whole(value)  # None for inf, nan and fractions
    if index is None or not 0 <= index < spec.num_classes:
        raise gr.Error(f"Class {shown(value)} is out of range: this model has classes 0 to {spec.num_classes - 1} "
                       f"({', '.join(spec.class_names)}).")
    return index
