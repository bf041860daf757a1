"""Compiled sampling in the demo, never waited for.

`method="compiled"` (`pixelrnn.stacked`) samples 2-2.6x faster than the cached sampler on one CPU thread, but each
model and batch size compiles once (20-40 s cold, seconds from inductor's disk cache). So the first run of a model
asks for its compilation in the background, for the batch sizes Generate asks most, and a run uses the compiled step
only for a model and batch size already compiled: the cached sampler otherwise.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import weakref

import torch

import pixelrnn
from pixelrnn.model import Model
from pixelrnn.stacked import compilable

log = logging.getLogger(__name__)

SIZES = (1, 4)  # Generate's batch for one visitor asking for one image, and for its default of 4


def compile_by_default() -> bool:
    """$PIXELRNN_COMPILE (0 or 1); by default on where inductor can compile for the CPU (a C++ compiler)."""
    setting = os.environ.get("PIXELRNN_COMPILE")
    if setting is not None:
        return setting.strip() not in ("", "0")
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


class Compiler:
    """One background thread that compiles each model's stacked step for `SIZES`, one model at a time."""

    def __init__(self, enabled: bool, sizes: tuple[int, ...] = SIZES):
        self.enabled, self.sizes = enabled, sizes
        self._ready: weakref.WeakKeyDictionary[Model, set[int]] = weakref.WeakKeyDictionary()  # compiled sizes
        self._asked: weakref.WeakSet[Model] = weakref.WeakSet()
        self._queue: queue.Queue[Model] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def method(self, model: Model, batch: int) -> str:
        """The sampler for a run of `batch` images: "compiled" if compiled already; else "cached" (and the model's
        compilation asked for, the first time)."""
        if not self.enabled or not compilable(model):
            return "cached"
        with self._lock:
            if batch in self._ready.get(model, ()):
                return "compiled"
            if model not in self._asked:
                self._asked.add(model)
                self._queue.put(model)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="pixelrnn-compile", daemon=True)
                    self._thread.start()
        return "cached"

    def failed(self, model: Model) -> None:
        """A compiled run of the model failed: the cached sampler for it from now on."""
        with self._lock:
            self._ready.pop(model, None)
            self._asked.add(model)

    def _work(self) -> None:
        torch.set_num_threads(1)  # as the samplers: the machine's other core serves visitors meanwhile
        while self.enabled:
            model = self._queue.get()
            y = None if model.num_classes is None else 0
            for size in self.sizes:
                try:  # as a batched run samples (`BatchServer`)
                    list(pixelrnn.sample_batch_steps(model, [pixelrnn.SampleRequest(size, y)], "compiled", every=0))
                except Exception:  # no compiler that works: the cached sampler for good
                    log.exception("compiling the sampler failed; the demo samples with the cached sampler")
                    self.enabled = False
                    return
                with self._lock:
                    self._ready.setdefault(model, set()).add(size)
            del model
