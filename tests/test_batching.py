"""Generate's batched sampling: which requests share a run, what each gets back, stopping and failing runs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import pixelrnn
import pixelrnn.stacked
from pixelrnn.ui.batching import BatchServer, Recording, _Waiting
from pixelrnn.ui.compiling import Compiler


def tiny(arch: str = "row_lstm", **hparams) -> pixelrnn.Model:
    torch.manual_seed(0)
    return pixelrnn.build_model(arch, 1, 2, 6, 6, hidden=4, layers=1, **hparams).double().eval()


def waiting(model, n: int = 1, work: int = 36) -> _Waiting:
    return _Waiting(model, pixelrnn.SampleRequest(n, seed=n), work, Recording(slice(0, n)))


def test_a_run_takes_the_oldest_request_and_every_other_one_for_its_model_within_the_work_limit():
    one, other = tiny(), tiny("pixelcnn")
    server = BatchServer(workers=0, max_work=100)
    queue = [waiting(one, work=40), waiting(other, work=10), waiting(one, work=40), waiting(one, work=40),
             waiting(other, work=10)]
    server._waiting = list(queue)
    assert server._next_batch() == [queue[0], queue[2]]  # a third would pass the limit
    assert server._next_batch() == [queue[1], queue[4]]
    assert server._next_batch() == [queue[3]]
    server._waiting = [waiting(one, work=500)]  # a request above the limit alone still runs (admission refuses those)
    assert len(server._next_batch()) == 1


def replayed(recording: Recording) -> list[pixelrnn.Step]:
    return list(recording.replay())


@pytest.mark.parametrize("model", [tiny(), tiny(factor=2, cond_channels=4), tiny(num_classes=3)],
                         ids=["row-lstm", "multiscale", "conditional"])
def test_each_request_replays_its_own_samples_step_by_step(model):
    """Requests submitted together come back as if each had run alone (float64): every step's image and the
    distribution its stream shows (its first image's), not only the last."""
    server = BatchServer(workers=1, max_work=10**6)
    conditional = model.config.num_classes is not None
    requests = [pixelrnn.SampleRequest(2, 1 if conditional else None, 1.0, 5),
                pixelrnn.SampleRequest(1, 2 if conditional else None, 0.5, 6)]
    with server._changed:  # both wait before the worker looks: they share its first run
        recordings = [server.submit(model, r, 72) for r in requests]
    for request, recording in zip(requests, recordings, strict=True):
        steps = replayed(recording)
        alone = list(pixelrnn.sample_steps(model, request.n, request.y, temperature=request.temperature,
                                           seed=request.seed))
        assert len(steps) == len(alone)
        for mine, solo in zip(steps, alone, strict=True):
            assert mine.position == solo.position and mine.stage == solo.stage
            assert torch.equal(mine.done, solo.done) and torch.equal(mine.probs, solo.probs[:1])  # its first image's
            done = mine.done.expand_as(mine.image)  # the pixels a step has reached are as they were then
            assert torch.equal(mine.image[done], solo.image[done])
        assert torch.equal(steps[-1].image, alone[-1].image)
    assert [r.rows for r in recordings] == [slice(0, 2), slice(2, 3)]


def test_a_run_whose_visitors_all_left_stops_and_errors_reach_every_request(monkeypatch):
    step = next(iter(pixelrnn.sample_steps(tiny(), 2, seed=0)))  # a step of a run of two 1-image requests

    def endless(model, requests, method):  # a run that only stops when it is told to
        while True:
            yield step

    monkeypatch.setattr(pixelrnn, "sample_batch_steps", endless)
    server = BatchServer(workers=1, max_work=10**6)
    with server._changed:  # both wait before the worker looks: they share its first run
        left, staying = (server.submit(None, pixelrnn.SampleRequest(1), 36) for _ in range(2))
    with left.changed:
        assert left.changed.wait_for(lambda: len(left.steps) > 3, timeout=60)
    left.cancelled = True
    assert not left.finished  # another visitor still watches the run
    staying.cancelled = True
    with left.changed:
        assert left.changed.wait_for(lambda: left.finished, timeout=60)
    assert left.error is None and staying.finished

    def failing(model, requests, method):
        yield step
        raise RuntimeError("the weights are not finite")

    monkeypatch.setattr(pixelrnn, "sample_batch_steps", failing)
    with server._changed:
        recordings = [server.submit(None, pixelrnn.SampleRequest(1), 36) for _ in range(2)]
    for recording in recordings:
        with pytest.raises(RuntimeError, match="not finite"):
            replayed(recording)


def test_on_zerogpu_a_run_is_one_short_gpu_call_and_the_animation_plays_after_it(tmp_path):
    """ZeroGPU holds the GPU for a whole decorated call, a generator's too: with Studio's `gpu` decorator (here a
    fake that logs when the "GPU" is held), a Generate request samples in one call and every frame of its
    animation is sent after the call returned; the samples are the seed's."""
    import functools

    from conftest import save_tiny_checkpoints

    from pixelrnn import ui

    log: list[tuple[str, float]] = []

    def fake_gpu(fn):
        @functools.wraps(fn)
        def held(*args, **kwargs):
            log.append(("gpu on", time.monotonic()))
            try:
                return fn(*args, **kwargs)
            finally:
                log.append(("gpu off", time.monotonic()))
        return held

    checkpoints = save_tiny_checkpoints(tmp_path, rgb=False)
    studio = ui.Studio(ui.Registry(checkpoints, device="cpu"), gpu=fake_gpu)
    for frame in studio.sampling.generate("tiny-bin", None, 2, 1.0, 5, 4.0):
        log.append(("frame", time.monotonic()))
    events = [event for event, _ in log]
    assert events[:2] == ["gpu on", "gpu off"] and events.count("gpu on") == 1 and events.count("frame") > 5
    held, animation = log[1][1] - log[0][1], log[-1][1] - log[1][1]
    assert animation > held  # the 4-s animation plays after the GPU call (which takes ~0.2 s of it)
    final = frame[0]
    model = pixelrnn.load(str(checkpoints / "tiny-bin"))
    expected = ui.pictures.render_images(pixelrnn.sample(model, 2, seed=5).numpy(), 2,
                                         ui.pictures.grid_scale(28, 28, 2))
    assert np.array_equal(final, pixelrnn.images.tile(expected, 2))


def test_the_demo_samples_with_the_compiled_step_once_it_is_compiled_and_never_before():
    """The first run of a model asks for its compilation in the background and samples with the cached sampler;
    once its batch size is compiled, runs of that size use the compiled step, with the same images (float64)."""
    model, compiler = tiny(), Compiler(True, sizes=(3,))
    server = BatchServer(workers=1, max_work=10**6, compiler=compiler)
    requests = [pixelrnn.SampleRequest(2, seed=5), pixelrnn.SampleRequest(1, temperature=0.5, seed=6)]
    for expected in ("cached", "compiled"):
        with server._changed:  # both in one run of 3 images
            recordings = [server.submit(model, r, 72) for r in requests]
        for request, recording in zip(requests, recordings, strict=True):
            alone = pixelrnn.sample(model, request.n, temperature=request.temperature, seed=request.seed)
            assert torch.equal(replayed(recording)[-1].image, alone) and recording.method == expected
        while compiler.method(model, 3) != "compiled":  # compiling; a failure turns it off for good
            assert compiler.enabled, "the compilation failed"
            time.sleep(0.05)
    assert compiler.method(model, 2) == "cached", "a batch size not compiled"


def test_a_failed_compilation_leaves_the_demo_on_the_cached_sampler(monkeypatch):
    """Compiling at start-up fails (no C++ compiler): the cached sampler for good. A compiled run that fails on a
    visitor's request (it would have to compile again) is served again with the cached sampler, its images the
    seed's, and the model keeps the cached sampler."""
    def broken(kind: str, arch: str):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(pixelrnn.stacked, "compiled", broken)
    compiler, model = Compiler(True, sizes=(1,)), tiny()
    assert compiler.method(model, 1) == "cached"
    compiler._thread.join()
    assert not compiler.enabled and compiler.method(model, 1) == "cached"

    compiler = Compiler(True, sizes=(1,))
    compiler._asked.add(model)
    compiler._ready[model] = {1}  # as if compiled, but every compiled call now fails
    assert compiler.method(model, 1) == "compiled"
    recording = BatchServer(workers=1, max_work=10**6, compiler=compiler).submit(model, pixelrnn.SampleRequest(seed=3), 36)
    assert torch.equal(replayed(recording)[-1].image, pixelrnn.sample(model, 1, seed=3))
    assert recording.method == "cached" and compiler.method(model, 1) == "cached"
