"""Serving many visitors like a model server: Generate requests for the same model share batched runs.

A request is recorded, not streamed from its own sampler: worker threads (one per core) take every waiting
request for a model into one `pixelrnn.sample_batch_steps` run, which gives each its own seed, class and
temperature, and record each request's steps as they come. The request's stream replays its recording at the
visitor's pace, so a slow animation never holds the sampler (issue 20), and a request that arrives while a run
is going joins the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import torch

import pixelrnn
from pixelrnn.ui.compiling import Compiler
from pixelrnn.ui.errors import release_memory

log = logging.getLogger(__name__)
BIG_RUN = 8  # images: after a larger run the freed heap is returned to the system
RECORD_S = 0.01  # a run hands its steps to the recordings (and wakes their streams) at most this often


class SamplingFailed(RuntimeError):
    """A batched run failed: each of its requests gets its own exception, caused by the run's."""


@dataclass(eq=False)
class Recording:
    """One request's part of a batched run: filled in by a worker, replayed by the request's stream."""

    rows: slice  # the request's rows of the run's batch
    index: int = 0  # the request's place in the run: its first image's distribution is probs[index]
    method: str = "cached"  # the run's sampler (`pixelrnn.sample`'s method)
    steps: list[pixelrnn.Step] = field(default_factory=list)  # the run's steps, without images, `first_rows` probs
    latest: dict[str, torch.Tensor] = field(default_factory=dict)  # stage -> its latest image, whole batch
    finished: bool = False
    error: BaseException | None = None
    cancelled: bool = False  # the visitor left: the run may stop once every request in it has
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, steps: list[pixelrnn.Step], images: dict[str, torch.Tensor]) -> None:
        """Record steps (in order, without their images; shared by the run's requests) and each stage's latest
        image (the run's own tensor, which it goes on writing): one image per stage, not one per step."""
        with self.changed:
            self.steps += steps
            self.latest |= images
            self.changed.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self.changed:
            self.finished, self.error = True, error
            self.changed.notify_all()

    def replay(self) -> Iterator[pixelrnn.Step]:
        """This request's steps, each as soon as it is recorded, with its images and its first image's
        distribution (what its stream shows: a run keeps no more, `first_rows`). A step's image is its stage's
        latest: the pixels the step has not reached are drawn pending, and a drawn pixel never changes (plain
        sampling), so the latest image shows every step as it was."""
        k = 0
        while True:
            with self.changed:
                while k >= len(self.steps) and not self.finished:
                    self.changed.wait()
                if self.error is not None:
                    raise SamplingFailed(str(self.error)) from self.error
                if k >= len(self.steps):
                    return
                ready, latest = self.steps[k:], dict(self.latest)  # every step recorded so far, at once
            for step in ready:
                yield replace(step, image=latest[step.stage][self.rows], probs=step.probs[self.index : self.index + 1])
            k += len(ready)


@dataclass(eq=False)
class _Waiting:
    model: pixelrnn.Model
    request: pixelrnn.SampleRequest
    work: int  # pixel samples (images x sub-pixels)
    recording: Recording


Run = Callable[[pixelrnn.Model, list[pixelrnn.SampleRequest]], Iterable[pixelrnn.Step]]


def first_rows(requests: list[pixelrnn.SampleRequest]) -> list[int]:
    """Each request's first row in its run's batch."""
    return [sum(r.n for r in requests[:k]) for k in range(len(requests))]


def _kept(steps: list[pixelrnn.Step], rows: list[int]) -> list[pixelrnn.Step]:
    """What a run keeps of its steps: no images, and only the distributions of each request's first image (the
    one its stream shows), on the CPU: a 128-image CIFAR-10 run's every distribution would hold 400 MB."""
    if not steps:
        return []
    index = torch.tensor(rows, device=steps[0].probs.device)
    probs = torch.stack([step.probs.index_select(0, index) for step in steps]).cpu().unbind(0)  # one copy a chunk
    known = {id(step.known): step.known for step in steps}  # a stage's steps share one
    known = {key: mask.cpu() for key, mask in known.items()}
    return [pixelrnn.Step(None, step.position, step_probs, known[id(step.known)], step.stage, step.ess)
            for step, step_probs in zip(steps, probs, strict=True)]


def recorded(gpu: Callable[[Callable], Callable]) -> Run:
    """A batched run as one call decorated by `gpu` (ZeroGPU's `spaces.GPU`, which holds the GPU for the whole
    call): the model on the GPU if there is one, every step recorded (the images only at each stage's end),
    returned at once on the CPU. The streams replay the recording after the call, at the visitors' pace."""

    @gpu
    def run(model: pixelrnn.Model, requests: list[pixelrnn.SampleRequest]) -> list[pixelrnn.Step]:
        # moved in place: ZeroGPU runs the call in a process of its own, so the registry's model stays on the CPU
        model = model.to("cuda" if torch.cuda.is_available() else "cpu")
        steps = list(pixelrnn.sample_batch_steps(model, requests))
        ends = {step.stage: k for k, step in enumerate(steps)}  # each stage's last step keeps its image
        return [replace(kept, image=steps[k].image.cpu() if k in ends.values() else None)
                for k, kept in enumerate(_kept(steps, first_rows(requests)))]

    return run


class BatchServer:
    """Worker threads that run waiting Generate requests in batches, one model per run: `run` streams the steps
    (default `pixelrnn.sample_batch_steps`) or returns them all (`recorded`)."""

    def __init__(self, workers: int, max_work: int, cpu_threads: int = 1, run: Run | None = None,
                 compiler: Compiler | None = None) -> None:
        self.workers, self.max_work, self.cpu_threads = workers, max_work, cpu_threads
        self.run = run
        self.compiler = compiler or Compiler(False)  # which sampler a streamed run uses
        self._waiting: list[_Waiting] = []
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []

    def submit(self, model: pixelrnn.Model, request: pixelrnn.SampleRequest, work: int) -> Recording:
        """Queue a request; its recording fills in once a worker takes it (with the others waiting for the model)."""
        recording = Recording(slice(0, request.n))
        with self._changed:
            self._waiting.append(_Waiting(model, request, work, recording))
            if len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"pixelrnn-batch-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
            self._changed.notify()
        return recording

    def _next_batch(self) -> list[_Waiting]:
        """The oldest waiting request and every other one for the same model, up to max_work in all."""
        with self._changed:
            while not self._waiting:
                self._changed.wait()
            first = self._waiting[0]
            batch, work = [], 0
            for waiting in self._waiting:
                if waiting.model is first.model and (not batch or work + waiting.work <= self.max_work):
                    batch.append(waiting)
                    work += waiting.work
            self._waiting = [w for w in self._waiting if w not in batch]
            return batch

    def _work(self) -> None:
        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        while True:
            batch = self._next_batch()
            for index, (waiting, first) in enumerate(zip(batch, first_rows([w.request for w in batch]), strict=True)):
                waiting.recording.rows, waiting.recording.index = slice(first, first + waiting.request.n), index
            images = sum(w.request.n for w in batch)
            error = None
            try:
                self._serve(batch)
            except Exception as exc:  # every request of the run gets the error
                log.exception("a batched sampling run failed")
                error = exc
            finally:
                for waiting in batch:
                    waiting.recording.finish(error)
                if images > BIG_RUN:
                    release_memory()

    def _serve(self, batch: list[_Waiting]) -> None:
        """One run for `batch`, its steps recorded for each request as they come (or at once, `recorded`). A
        compiled run that fails before its first step (it would have to compile again, say) is run again with the
        cached sampler, which the model keeps from then on."""
        model, requests = batch[0].model, [w.request for w in batch]
        if self.run:  # looked up per run (the tests replace it)
            self._record(batch, self.run(model, requests), "cached")
            return
        method = self.compiler.method(model, sum(r.n for r in requests))
        try:
            self._record(batch, pixelrnn.sample_batch_steps(model, requests, method), method)
        except Exception:
            if method == "cached" or any(w.recording.steps for w in batch):
                raise
            log.exception("a compiled run failed: the model samples with the cached sampler from now on")
            self.compiler.failed(model)
            self._record(batch, pixelrnn.sample_batch_steps(model, requests, "cached"), "cached")

    def _record(self, batch: list[_Waiting], steps: Iterable[pixelrnn.Step] | list[pixelrnn.Step],
                method: str) -> None:
        """Hand a run's steps to its requests as they come, in chunks (a `recorded` run's list at once)."""
        for waiting in batch:
            waiting.recording.method = method
        if isinstance(steps, list):  # recorded in one call (`recorded`): kept already
            self._hand(batch, steps, {s.stage: s.image for s in steps if s.image is not None})
            return
        rows, chunk, handed = first_rows([w.request for w in batch]), [], time.monotonic()

        def hand_chunk() -> None:
            self._hand(batch, _kept(chunk, rows), {step.stage: step.image for step in chunk})

        for step in steps:
            chunk.append(step)
            if time.monotonic() - handed >= RECORD_S:  # per step, this would cost the sampler the interpreter lock
                hand_chunk()
                chunk, handed = [], time.monotonic()
                if all(w.recording.cancelled for w in batch):  # every visitor of the run left
                    return
        hand_chunk()

    @staticmethod
    def _hand(batch: list[_Waiting], kept: list[pixelrnn.Step], images: dict[str, torch.Tensor]) -> None:
        """Give every request of the run its kept steps and each stage's latest image."""
        for waiting in batch:
            waiting.recording.add(kept, images)
