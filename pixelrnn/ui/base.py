"""`Core`: what every tab's endpoints share: the registry, threads, capacity, streaming frames, cached analyses."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gradio as gr
import numpy as np
import torch

import pixelrnn
from pixelrnn.ui.batching import BatchServer, recorded
from pixelrnn.ui.cards import Analysis, analyse
from pixelrnn.ui.compiling import Compiler, compile_by_default
from pixelrnn.ui.errors import release_memory
from pixelrnn.ui.params import AUTO_CLASS, parse_class
from pixelrnn.ui.registry import Registry
from pixelrnn.ui.settings import GENERATE_WORKERS, LONG_WORK, MAX_WORK
from pixelrnn.ui.streaming import PROGRESS_END, FrameGate, Pacer, with_last
from pixelrnn.ui.uploads import ModelSpec, prepare_image
from pixelrnn.views import pixel_fields

log = logging.getLogger(__name__)


class Core:
    """What the tabs share over a Registry, handed to each tab: thread settings, the capacity check, streaming
    sampler steps as frames, Generate's batched sampling, a cache of likelihood analyses and the folder of .prnn
    downloads."""

    def __init__(self, registry: Registry, cpu_threads: int = 1, gpu: Callable[[Callable], Callable] | None = None,
                 compile: bool | None = None):
        self.registry, self.cpu_threads = registry, cpu_threads
        # the compiled sampler where it is compiled already (not on ZeroGPU: its runs are on the GPU)
        self.compiler = Compiler((compile_by_default() if compile is None else compile) and gpu is None)
        self._analyses: OrderedDict[tuple, Analysis] = OrderedDict()
        self._analyses_lock = threading.Lock()
        self._long_job = threading.Lock()  # held by the one sampling request above LONG_WORK
        self.downloads = tempfile.TemporaryDirectory(prefix="pixelrnn-prnn-")  # .prnn files offered for download
        self._fields: dict[tuple, np.ndarray | None] = {}  # (model, weights) -> receptive fields; None: measuring
        self._fields_lock = threading.Lock()
        self._shows_field: OrderedDict[tuple[str, str], bool] = OrderedDict()  # (session, tab) -> overlay on
        self._measuring = threading.Semaphore(1)  # one measurement of receptive fields at a time (GBs for CIFAR)
        # Generate's batched sampling; with a `gpu` decorator (ZeroGPU's spaces.GPU) each run is one GPU call
        self.batches = BatchServer(GENERATE_WORKERS, MAX_WORK, cpu_threads, recorded(gpu) if gpu else None,
                                   self.compiler)
        self._streams, self._streams_lock = 0, threading.Lock()  # sampling streams running now (they share frames)

    # -- helpers --
    def threads(self) -> None:
        """Sampling runs thousands of tiny ops: one CPU thread per request is faster than two contending ones
        (intra-op threads on a busy machine can be 10-100x slower). The setting holds per worker thread."""
        if self.registry.device == "cpu" and self.cpu_threads and torch.get_num_threads() != self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)

    def class_update(self, name: Any, allow_auto: bool = False) -> dict:
        """Class dropdown for the chosen model: hidden for unconditional models."""
        try:
            spec = self.registry.spec(name)
        except gr.Error:
            return gr.update(choices=[], value=None, visible=False)
        if not spec.num_classes:
            return gr.update(choices=[], value=None, visible=False)
        choices = ([AUTO_CLASS] if allow_auto else []) + list(spec.class_names)
        return gr.update(choices=choices, value=choices[0], visible=True)

    def steps_total(self, spec: ModelSpec) -> int:
        small = (spec.height // spec.factor) * (spec.width // spec.factor) if spec.factor else 0
        return spec.height * spec.width + small

    def work(self, batch: int, spec: ModelSpec) -> int:
        """A sampling request's work in pixel samples: images (x particles) x sub-pixels."""
        return batch * spec.channels * self.steps_total(spec)

    @contextlib.contextmanager
    def capacity(self, batch: int, spec: ModelSpec, fewer: str) -> Iterator[int]:
        """Admit a sampling request of `batch` images (particles included), yielding its work (`work`). Above
        MAX_WORK it is refused; above LONG_WORK it runs only if no other such job does, so that of the
        SAMPLING_SLOTS concurrent requests at least SAMPLING_SLOTS - 1 are always free for short ones. `fewer`
        names what to reduce."""
        work = self.work(batch, spec)
        if work > MAX_WORK:
            raise gr.Error(f"This request needs {work:,} pixel samples ({batch} images x {spec.channels} channels x "
                           f"{self.steps_total(spec):,} pixels), more than the {MAX_WORK:,} one request may use: "
                           f"ask for fewer {fewer}.")
        if work <= LONG_WORK:
            yield work
            return
        if not self._long_job.acquire(blocking=False):
            raise gr.Error(f"Another large request is running (those above {LONG_WORK:,} pixel samples run one at a "
                           f"time; this one needs {work:,}): try again in a minute, or ask for fewer {fewer}.")
        try:
            yield work
        finally:
            self._long_job.release()
            release_memory()

    def stream(self, steps: Iterable[pixelrnn.Step], spec: ModelSpec, pace: float,
               render: Callable[[pixelrnn.Step, bool], tuple[np.ndarray, np.ndarray]], summary: Callable[[Any], str]
               ) -> Iterator[tuple]:
        """Throttle, pace and render sampler steps into (image, distribution, status) updates. The status says how
        far it is (the app shows no progress bar over it: one would cover the previous run's status)."""
        gate, total = FrameGate(streams=lambda: self._streams, full_rate=GENERATE_WORKERS), self.steps_total(spec)
        pacer, start = Pacer(total, pace), time.monotonic()
        last = None
        try:
            for k, (step, final) in enumerate(with_last(steps), start=1):
                if k == 1:  # playing from now on (a request still waiting for its run takes no frames)
                    with self._streams_lock:
                        self._streams += 1
                pacer.wait(k)
                last = step
                if not gate.due(final):
                    continue
                started = time.monotonic()
                image, dist = render(step, final)
                seconds = time.monotonic() - start
                status = (summary(last) if final else
                          f"Pixel {min(k, total):,} of {total:,}, {seconds:.1f} s{PROGRESS_END}")
                yield gate.fresh("image", image), gate.fresh("dist", dist), gate.fresh("status", status)
                gate.spent(time.monotonic() - started)
        finally:
            if last is not None:
                with self._streams_lock:
                    self._streams -= 1

    def receptive_fields(self, name: str, model: pixelrnn.Model) -> np.ndarray | None:
        """(H, W, H, W) bool: for each pixel, the pixels its first channel's distribution depends on in this model
        (`views.pixel_fields`, measured from the model), or None until measured: the first request starts the
        measurement in a background thread (seconds; once per model and weights), so a stream never waits."""
        key = (name, self.registry.version(name))
        with self._fields_lock:
            if key in self._fields:
                return self._fields[key]
            self._fields[key] = None
        threading.Thread(target=self._measure_fields, args=(key, model), name=f"fields {name}", daemon=True).start()
        return None

    def show_field(self, tab: str, show: Any, request: gr.Request) -> None:
        """A tab's overlay checkbox, remembered per browser session: the sampling endpoints keep their arguments."""
        if request is not None and request.session_hash:
            with self._fields_lock:
                self._shows_field[request.session_hash, tab] = show is True
                self._shows_field.move_to_end((request.session_hash, tab))
                while len(self._shows_field) > 1024:
                    self._shows_field.popitem(last=False)

    def shows_field(self, request: gr.Request | None, tab: str) -> bool:
        """Whether this request's session has the tab's receptive-field overlay switched on (read every frame)."""
        with self._fields_lock:
            return request is not None and self._shows_field.get((request.session_hash or "", tab), False)

    def _measure_fields(self, key: tuple, model: pixelrnn.Model) -> None:
        """Measure in this background thread at the lowest CPU priority (Linux: per thread), so that sampling
        requests go first: about 45 s for a binarized-MNIST Row LSTM, 7 minutes for the CIFAR-10 PixelCNN on 2
        vCPUs, once per model and weights."""
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            with self._measuring:
                fields = pixel_fields(model).numpy()
        except Exception:  # the overlay is an extra: the stream goes on without it
            log.exception("measuring the receptive fields of %s failed", key[0])
            return
        finally:
            release_memory()
        with self._fields_lock:
            self._fields[key] = fields
            while len(self._fields) > 8:  # older weights' entries
                self._fields.pop(next(iter(self._fields)))

    async def arrival(self, model_name: Any, *inputs: Any) -> list[dict]:
        """Gradio validator of the events that load a model (the model is their first input): `Registry.arrival`,
        then every input valid (the event itself says what is wrong, as it does without the validator)."""
        await self.registry.arrival(model_name)
        return [gr.validate(True, "")] * (1 + len(inputs))

    def analysis(self, name: str, image: Any, class_label: Any) -> tuple[ModelSpec, Analysis]:
        self.threads()
        spec = self.registry.spec(name)
        y = parse_class(class_label, spec, allow_auto=True)
        prepared = prepare_image(image, spec)
        model = self.registry.load(name)
        key = (name, self.registry.version(name), hashlib.blake2b(prepared.pixels.tobytes()).hexdigest(), y)
        with self._analyses_lock:
            if key in self._analyses:
                self._analyses.move_to_end(key)
                return spec, self._analyses[key]
        analysis = analyse(model, spec, prepared, y)
        with self._analyses_lock:
            self._analyses[key] = analysis
            while len(self._analyses) > 16:
                self._analyses.popitem(last=False)
        return spec, analysis
