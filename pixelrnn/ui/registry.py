"""The model registry: local checkpoints and Hub models, loaded on first use, failures remembered."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import torch

import pixelrnn
from pixelrnn.checkpoints import (
    METRICS,
    WEIGHTS,
    check_folder,
    load_folder,
    pickle_weights,
    read_config,
    read_json,
    read_weights,
)
from pixelrnn.data import CIFAR10_CLASSES, MNIST_CLASSES
from pixelrnn.hub import resolve
from pixelrnn.model import Model, MultiScalePixelRNN
from pixelrnn.ui.errors import redact_paths
from pixelrnn.ui.params import shown
from pixelrnn.ui.settings import REPO_ROOT
from pixelrnn.ui.uploads import ModelSpec

log = logging.getLogger(__name__)


RETRY_AFTER_S = 120.0  # a model that failed to load is tried again after this long (at once if its weights change)
LOAD_WAIT_S = 20.0  # a request waits this long for a local model being loaded
HUB_WAIT_S = 3.0  # a request for a Hub model still downloading waits this long for it (a small checkpoint arrives):
# in `arrival`, before it takes a slot, holding no thread; in `load`, which holds one, only the request that starts
# the download waits (events without `arrival`), later ones answer at once


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def class_names(num_classes: int | None, dataset: str | None) -> tuple[str, ...]:
    if not num_classes:
        return ()
    known = {"cifar10": CIFAR10_CLASSES, "mnist": MNIST_CLASSES}.get(dataset or "")
    return tuple(known) if known and len(known) == num_classes else tuple(str(k) for k in range(num_classes))


def spec_of(model: Model, dataset: str | None = None) -> ModelSpec:
    large = model.large if isinstance(model, MultiScalePixelRNN) else model
    return ModelSpec(large.arch, large.channels, large.levels, large.height, large.width, large.num_classes,
                     model.factor if isinstance(model, MultiScalePixelRNN) else None,
                     class_names(large.num_classes, dataset), dataset)


@dataclass
class ModelEntry:
    """A model the app can offer: a local checkpoint folder or a Hub repo id (loaded lazily)."""

    name: str
    source: str  # "local" | "hub"
    location: str  # folder path or Hub repo id
    spec: ModelSpec | None = None  # None for a Hub model until it is loaded, or for an invalid config
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    parameters: int | None = None

    @property
    def weights(self) -> Path | None:
        return Path(self.location) / WEIGHTS if self.source == "local" else None


@dataclass(frozen=True)
class LoadFailure:
    """Why a model could not be loaded, for which version of its weights, and when (time.monotonic())."""

    version: Any
    reason: str  # shown to users: no server paths
    at: float


class Registry:
    """Discovers checkpoints (folders with a config.json under `root`, plus Hub ids) and loads them lazily,
    one cached copy per model (reloaded when a local model.safetensors changes).

    Local folders are validated at discovery (config bounds, the weights' header, and that every weight is finite,
    which reads the tensors: ~75 ms for the six shipped checkpoints), so a broken checkpoint is listed with its
    reason and never offered as the default. A failed load is
    remembered and not retried for RETRY_AFTER_S seconds, or until the weights change. Loading, Hub
    downloads included, runs in a background thread and outside the registry's lock, which guards only its
    dictionaries: a request waits at most LOAD_WAIT_S for a local model, HUB_WAIT_S for the Hub download it
    starts, not at all for one already under way, and never for another model's download.
    """

    def __init__(self, root: str | Path | None = None, hub_ids: Iterable[str] = (), device: str | None = None):
        self.root = Path(root) if root else REPO_ROOT / "checkpoints"
        self.device = device or default_device()
        self.entries: dict[str, ModelEntry] = {}
        self._cache: dict[str, tuple[Any, Model]] = {}
        self._failures: dict[str, LoadFailure] = {}
        self._jobs: dict[str, Future] = {}
        self._lock = threading.Lock()
        for folder in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if (folder / "config.json").is_file():
                self.entries[folder.name] = entry = ModelEntry(folder.name, "local", str(folder))
                self._discover(entry)
        for repo_id in hub_ids:
            repo_id = repo_id.strip()
            if repo_id and repo_id not in self.entries:
                self.entries[repo_id] = ModelEntry(repo_id, "hub", repo_id)

    def _discover(self, entry: ModelEntry) -> None:
        """Read a local checkpoint's metadata and validate it (no tensors are read); remember what is wrong."""
        folder = Path(entry.location)
        try:
            cls, entry.config = read_config(folder / "config.json")
            with torch.device("meta"):
                skeleton = cls(**entry.config)
            entry.metrics = read_json(folder / METRICS)
            entry.spec = spec_of(skeleton, entry.metrics.get("dataset"))
            entry.parameters = sum(p.numel() for p in skeleton.parameters())
            if entry.weights.is_file() or pickle_weights(folder):
                check_folder(folder)
                read_weights(entry.weights)  # non-finite weights (a diverged run) are never "ready"
        except pixelrnn.CheckpointError as err:
            log.warning("checkpoint %s cannot be loaded: %s", folder, err)
            self._failures[entry.name] = LoadFailure(self._version(entry), redact_paths(str(err)), time.monotonic())

    @classmethod
    def from_env(cls, root: str | Path | None = None, hub_ids: Iterable[str] | None = None,
                 device: str | None = None) -> Registry:
        """Registry of $PIXELRNN_CHECKPOINTS (default checkpoints/) and $PIXELRNN_HUB_MODELS (comma-separated)."""
        root = root or os.environ.get("PIXELRNN_CHECKPOINTS") or None
        if hub_ids is None:
            hub_ids = [s for s in os.environ.get("PIXELRNN_HUB_MODELS", "").split(",") if s.strip()]
        return cls(root, hub_ids, device)

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    @staticmethod
    def _version(entry: ModelEntry) -> Any:
        """What identifies a local model's weights (changes when training writes new ones); None for the Hub or
        when there is no model.safetensors."""
        if entry.weights is None:
            return None
        try:
            info = entry.weights.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def problem(self, name: str) -> str | None:
        """Why a model cannot be used now (its last failure, even once a retry is allowed, while its weights are
        unchanged; or no weights yet), or None if it is loaded or may load."""
        entry = self.entries[name]
        version = self._version(entry)
        with self._lock:
            failure = self._failures.get(name)
        if failure is not None and failure.version == version:
            return failure.reason
        if entry.source == "local" and version is None:
            return "no model.safetensors yet: it may still be training"
        return None

    def _names(self, multiscale: bool) -> list[str]:
        return [name for name, entry in self.entries.items()
                if not multiscale or (entry.spec is not None and entry.spec.factor)]

    def choices(self, multiscale: bool = False) -> list[tuple[str, str]]:
        """(label, name) for a model dropdown (only Multi-Scale models if `multiscale`): models that cannot be used
        now are marked."""
        return [(name if self.problem(name) is None else f"{name} (cannot load)", name)
                for name in self._names(multiscale)]

    def default(self, prefer: Iterable[str] = (), multiscale: bool = False) -> str | None:
        """A model to preselect: the first of `prefer` that can be used, else the first that can; never one that
        failed to load or has no weights."""
        ready = [name for name in self._names(multiscale) if self.problem(name) is None]
        for name in prefer:
            if name in ready:
                return name
        return ready[0] if ready else None

    def entry(self, name: Any) -> ModelEntry:
        if not self.entries:
            raise gr.Error("No models found: put checkpoint folders into the checkpoints folder "
                           "($PIXELRNN_CHECKPOINTS) or set PIXELRNN_HUB_MODELS.")
        if not isinstance(name, str) or name not in self.entries:
            raise gr.Error(f"Unknown model {shown(name)}: choose one of {', '.join(self.names)}.")
        return self.entries[name]

    def spec(self, name: Any) -> ModelSpec:
        entry = self.entry(name)
        if entry.spec is None:
            self.load(name)
        return entry.spec

    def load(self, name: Any) -> Model:
        """The model, loaded on first use; gr.Error with the reason if it cannot be loaded (remembered), or while it
        is still loading or downloading (that goes on in the background; see the class's waits)."""
        entry = self.entry(name)
        version = self._version(entry)
        if entry.source == "local" and version is None and not pickle_weights(entry.location):
            raise gr.Error(f"Model {name!r} has no weights yet: it may still be training.")
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == version:
                return cached[1]
            failure = self._failure(name, version)
            if failure is not None:
                raise gr.Error(f"Cannot load model {name!r}: {failure.reason}")
            wait = LOAD_WAIT_S if entry.source == "local" else HUB_WAIT_S if name not in self._jobs else 0.0
            job = self._job(entry, version)
        try:
            return job.result(timeout=wait)
        except TimeoutError:
            doing = "downloaded from the Hugging Face Hub" if entry.source == "hub" else "loaded"
            raise gr.Error(f"Model {name!r} is still being {doing}: try again in a minute.") from None

    async def arrival(self, name: Any, timeout: float | None = None) -> None:
        """Wait up to `timeout` (default HUB_WAIT_S) for a Hub model that is not loaded yet, starting its download,
        holding no thread.

        The events that load a model run this first, as their Gradio validator, before the request takes a slot: the
        request then finds the model loaded, or is told at once that it is still downloading. So a stalled download
        holds no slot, and a client asking for it in a loop asks at most once per wait."""
        if not isinstance(name, str) or name not in self.entries or self.entries[name].source != "hub":
            return
        entry = self.entries[name]
        version = self._version(entry)
        with self._lock:
            cached = self._cache.get(name)
            if (cached is not None and cached[0] == version) or self._failure(name, version) is not None:
                return  # `load` answers at once
            arrived = asyncio.wrap_future(self._job(entry, version))
        arrived.add_done_callback(lambda done: done.cancelled() or done.exception())  # the failure is `load`'s news
        await asyncio.wait([arrived], timeout=HUB_WAIT_S if timeout is None else timeout)

    def _failure(self, name: str, version: Any) -> LoadFailure | None:
        """The model's remembered failure, if it still stands (same weights, under RETRY_AFTER_S old)."""
        failure = self._failures.get(name)
        fresh = failure is not None and failure.version == version and time.monotonic() - failure.at < RETRY_AFTER_S
        return failure if fresh else None

    def _job(self, entry: ModelEntry, version: Any) -> Future:
        """The model's load job, started if there is none; the caller holds the lock."""
        job = self._jobs.get(entry.name)
        if job is None:
            job = self._jobs[entry.name] = Future()
            threading.Thread(target=self._load_job, args=(entry, version, job), name=f"load {entry.name}",
                             daemon=True).start()
        return job

    def _load_job(self, entry: ModelEntry, version: Any, job: Future) -> None:
        """Resolve (the Hub is asked once; its files are then local) and load a model, without the lock."""
        try:
            folder = resolve(entry.location)
            model = load_folder(folder, device=self.device)
        except (pixelrnn.CheckpointError, OSError) as err:
            self._failed(entry, version, job, str(err))
            return
        except Exception as err:
            log.exception("loading %s failed", entry.name)
            self._failed(entry, version, job, f"{type(err).__name__}: {err}")
            return
        if entry.source == "hub":
            entry.metrics, entry.config = read_json(folder / METRICS), read_json(folder / "config.json")
        entry.spec = spec_of(model, entry.metrics.get("dataset"))
        entry.parameters = sum(p.numel() for p in model.parameters())
        with self._lock:
            self._cache[entry.name] = (version, model)
            self._failures.pop(entry.name, None)
            del self._jobs[entry.name]
        job.set_result(model)

    def _failed(self, entry: ModelEntry, version: Any, job: Future, reason: str) -> None:
        """Remember a failed load and report it to the requests waiting for it."""
        reason = redact_paths(reason)
        with self._lock:
            self._failures[entry.name] = LoadFailure(version, reason, time.monotonic())
            del self._jobs[entry.name]
        job.set_exception(gr.Error(f"Cannot load model {entry.name!r}: {reason}"))

    def loaded(self, name: str) -> bool:
        """Whether the model is loaded (its current weights), so that `load` returns at once."""
        with self._lock:
            cached = self._cache.get(name)
        return cached is not None and cached[0] == self._version(self.entries[name])

    def version(self, name: str) -> Any:
        with self._lock:
            return self._cache.get(name, (None,))[0]
