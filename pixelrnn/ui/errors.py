"""User-facing errors (gr.Error sentences, no server paths) and returning freed memory."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import inspect
import logging
import re
import sys
import traceback
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr

log = logging.getLogger(__name__)


try:  # glibc keeps freed heap memory in its arenas; malloc_trim gives it back to the system
    _malloc_trim: Callable[[int], int] | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


def release_memory() -> None:
    """Return the memory a large job freed to the system (after a maximum completion RSS stayed ~60 MB higher
    without this). A no-op without glibc."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def calls_within(fn: Callable, guard: Callable[[], contextlib.AbstractContextManager]) -> Callable:
    """`fn` (a function, or a generator function: its whole iteration) run inside a fresh `guard()` per call."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            with guard():
                yield from fn(*args, **kwargs)
        return generator

    @functools.wraps(fn)
    def function(*args, **kwargs):
        with guard():
            return fn(*args, **kwargs)
    return function


def returns_memory(fn: Callable) -> Callable:
    """Run `release_memory` once `fn` (a function or a generator function) is done and its locals are gone: an
    analysis of a large upload leaves hundreds of MB in glibc's arenas otherwise."""

    @contextlib.contextmanager
    def releasing() -> Iterator[None]:
        try:
            yield
        finally:
            release_memory()

    return calls_within(fn, releasing)


# --- errors ---------------------------------------------------------------------------------------

_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"`:;,()\[\]{}]+)+/?")


def redact_paths(text: str) -> str:
    """A message for users without server paths: every absolute path is cut to its last part
    ("/srv/app/checkpoints/x/model.safetensors: ..." -> "model.safetensors: ..."); URLs are kept."""
    return _ABSOLUTE_PATH.sub(lambda match: Path(match.group()).name or "/", text)


ERROR_TOAST_S = 6.0  # an error message disappears after this long


def user_errors(fn: Callable) -> Callable:
    """Turn a ValueError (e.g. from the library's argument checks) into gr.Error, and log anything unexpected,
    so that every failure reaches the user as a sentence. Works for functions and generator functions."""

    def convert(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            message = err.message
        elif isinstance(err, ValueError):
            message = redact_paths(str(err))
        else:
            log.exception("unexpected error in %s", fn.__name__)  # the one traceback in the log
            message = (f"Something went wrong ({type(err).__name__}: {redact_paths(str(err))}). Please try again "
                       f"or report it.")
        # a user's mistake is not the server's: one log line, not a traceback; toasts go before they pile up
        log.info("%s: %s", fn.__name__, message)
        return gr.Error(message, duration=ERROR_TOAST_S, print_exception=False)

    @contextlib.contextmanager
    def converting() -> Iterator[None]:
        try:
            yield
        except Exception as err:
            raise convert(err) from err

    return calls_within(fn, converting)


# --- requests Gradio itself rejects ---------------------------------------------------------------------------

REJECTED = (ValueError, TypeError, KeyError)  # Gradio's own checks of a payload (pydantic's errors are ValueErrors)


def _print_rejection(*args, **kwargs) -> None:
    """Stand-in for gradio.queueing's traceback.print_exc: a payload that Gradio's own checks reject (too few
    values, a file field that is not a file) is a client's mistake, logged as one line; anything else keeps its
    traceback. Our endpoints never reach here with their own errors (`user_errors` turns them into gr.Error)."""
    error = sys.exc_info()[1]
    if isinstance(error, REJECTED):
        log.info("rejected request: %s: %s", type(error).__name__, redact_paths(str(error)).splitlines()[0][:300])
    else:
        traceback.print_exc(*args, **kwargs)


def quiet_rejections() -> None:
    """Log requests that Gradio rejects before calling an endpoint as one line each, not a traceback (a probe
    of malformed payloads wrote 651 tracebacks). Replaces the `traceback` name in gradio.queueing only."""
    import gradio.queueing

    gradio.queueing.traceback = types.SimpleNamespace(print_exc=_print_rejection)
