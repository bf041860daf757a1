"""Streaming helpers: which frames to send, pacing an animation."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gradio as gr
import numpy as np

FRAME_INTERVAL_S = 1 / 20  # streamed frames: at most 20 updates per second
PROGRESS_END = "…"  # a running stream's status line ends so; a finished one's summary ends with a full stop


def is_progress(status: str | None) -> bool:
    """Whether a status line is a running stream's progress (not a summary, an error or empty)."""
    return isinstance(status, str) and status.rstrip().endswith(PROGRESS_END)


class FrameGate:
    """Which streamed frames to send: the final one, and otherwise at most one per `interval` seconds, or
    fewer when frames are costly: rendering and sending frames (Gradio encodes every image) takes at most
    1 / (1 + headroom) of the time, so that a stream finishes within 1.25x of the sampler alone; and fewer when
    `streams()` (the streams playing now) exceed `full_rate` (as many as the server has sampling workers, one per
    vCPU): the streams share the frame rate of `full_rate` streams, so that 24 visitors' frames do not starve the
    sampler that serves them. Never the same value twice for an output (the browser breaks on a repeated image
    file): `fresh` gives gr.skip()."""

    def __init__(self, interval: float = FRAME_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 headroom: float = 4.0, streams: Callable[[], int] = lambda: 1, full_rate: int = 2):
        self.interval, self.clock, self.headroom = interval, clock, headroom
        self.streams, self.full_rate = streams, full_rate
        self.last: float | None = None
        self.cost = 0.0  # smoothed seconds per frame
        self.sent: dict[str, bytes] = {}

    def due(self, final: bool = False) -> bool:
        now = self.clock()
        interval = self.interval * max(1.0, self.streams() / self.full_rate)
        if final or self.last is None or now - self.last >= max(interval, self.headroom * self.cost):
            self.last = now
            return True
        return False

    def spent(self, seconds: float) -> None:
        """Record what the last frame cost (rendering, and Gradio's work until the generator resumed)."""
        self.cost = seconds if self.cost == 0 else 0.7 * self.cost + 0.3 * seconds

    def fresh(self, key: str, value: Any) -> Any:
        """`value`, or gr.skip() if it equals what was last sent for `key`."""
        if isinstance(value, np.ndarray):
            hashed = hashlib.blake2b(np.ascontiguousarray(value).data, digest_size=16)  # no copy of the image
            hashed.update(str(value.shape).encode())
            digest = hashed.digest()
        else:
            digest = hashlib.blake2b(repr(value).encode(), digest_size=16).digest()
        if self.sent.get(key) == digest:
            return gr.skip()
        self.sent[key] = digest
        return value


class Pacer:
    """Spread `total` steps over at least `seconds` (sleeping when ahead), to make fast sampling watchable."""

    def __init__(self, total: int, seconds: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.total, self.seconds, self.clock, self.sleep = max(total, 1), seconds, clock, sleep
        self.start = clock()

    def wait(self, done: int) -> None:
        if self.seconds > 0:
            ahead = self.start + self.seconds * done / self.total - self.clock()
            if ahead > 0:
                self.sleep(ahead)


def with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """(item, is_last) pairs."""
    iterator = iter(items)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield previous, False
        previous = item
    yield previous, True
