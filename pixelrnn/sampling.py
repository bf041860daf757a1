"""Sampling, completion and likelihood maps for every PixelRNN architecture.

Generation is H*W*C sequential steps in raster-then-R->G->B order. A *stepper* (`pixelrnn.steppers`) gives the
logits of one pixel given everything generated before it; this module draws from them: plain sampling,
temperature, completion of known pixels and its context-aware version (SMC),
the Multi-Scale PixelRNN's two stages, and per-pixel likelihood maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from pixelrnn.model import Model, MultiScalePixelRNN, PixelRNN
from pixelrnn.stacked import StackedStepper
from pixelrnn.steppers import CachedStepper, ReferenceStepper, tempered_log_probs

# "compiled": the cached stepper's arithmetic as one torch.compile graph per pixel, 2-2.6x faster on one CPU
# thread (on the CPU it needs a C++ compiler; compiles at the first call for each model shape and batch size)
STEPPERS = {"cached": CachedStepper, "reference": ReferenceStepper, "compiled": StackedStepper}


@dataclass
class Step:
    """A progress record: the partial images and what was just sampled."""

    image: Tensor  # (n, C, H, W) current images (pixels not yet final hold the input or zeros)
    position: tuple[int, int]  # (row, col) of the pixel just finished
    probs: Tensor  # (n, levels, C) the predictive distribution sampled from (or scored) at `position`
    known: Tensor  # (H, W) bool: pixels final from the start (a completion's known ones), shared by a run's steps
    stage: str = "full"  # "small" then "full" for the Multi-Scale PixelRNN
    ess: list[Tensor] = field(default_factory=list)  # SMC: effective sample size after each row, (n,) each

    @property
    def done(self) -> Tensor:
        """(H, W) bool: the pixels that are final, the known ones and every one up to `position` in raster order
        (computed when asked: a run makes a Step per pixel, a consumer looks at few)."""
        height, width = self.known.shape
        order = torch.arange(height * width, device=self.known.device).view(height, width)
        return self.known | (order <= self.position[0] * width + self.position[1])


def _prepare(model: Model, n: int, y, image, mask, temperature: float, method: str, channels: int,
             height: int, width: int, device: torch.device) -> tuple[Tensor | None, Tensor, Tensor]:
    """Validate the arguments -> (labels (n,) or None, image (n, C, H, W), mask (H, W) bool)."""
    if method not in STEPPERS:
        raise ValueError(f"method must be one of {tuple(STEPPERS)}, got {method!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    num_classes = model.small.num_classes if isinstance(model, MultiScalePixelRNN) else model.num_classes
    if num_classes is None:
        if y is not None:
            raise ValueError("this model is unconditional: pass y=None")
        labels = None
    else:
        if y is None:
            raise ValueError(f"this model is class-conditional: pass y in [0, {num_classes})")
        labels = torch.as_tensor(y, dtype=torch.long, device=device).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(n)
        if labels.shape != (n,) or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"y must be one label or {n} labels in [0, {num_classes}), got {y!r}")
    if image is None:
        if mask is not None:
            raise ValueError("a mask needs an image to complete")
        return labels, torch.zeros(n, channels, height, width, dtype=torch.long, device=device), \
            torch.ones(height, width, dtype=torch.bool, device=device)
    image = torch.as_tensor(image, device=device)
    if image.dim() == 3:
        image = image.expand(n, -1, -1, -1)
    if image.shape != (n, channels, height, width):
        raise ValueError(f"image must be ({channels}, {height}, {width}) or ({n}, {channels}, {height}, {width}), "
                         f"got {tuple(image.shape)}")
    if image.is_floating_point() or int(image.min()) < 0 or int(image.max()) >= _levels(model):
        raise ValueError(f"image must hold integer levels in [0, {_levels(model)})")
    mask = torch.ones(height, width, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
    if mask.shape != (height, width) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a ({height}, {width}) bool tensor (True = to fill), got "
                         f"{tuple(mask.shape)} {mask.dtype}")
    return labels, image.long().clone(memory_format=torch.contiguous_format), mask.to(device)


def _levels(model: Model) -> int:
    return model.large.levels if isinstance(model, MultiScalePixelRNN) else model.levels


def _generate(model: PixelRNN, x: Tensor, mask: Tensor, y: Tensor | None, cond: Tensor | None,
              temperature: float | Tensor, generators: list[tuple[torch.Generator, int]], method: str, every: int,
              particles: int, stage: str, scored: Tensor | None = None) -> Iterator[Step]:
    """Fill the True pixels of `mask` in x (N, C, H, W) in raster order, in place, with the `method`'s stepper
    (`STEPPERS`); yield progress (each Step's image is x itself, which the loop goes on writing: a caller that keeps
    one copies it).

    generators: (generator, rows) blocks of x's rows in order: each block's uniforms come from its own
    generator, as they would alone (`sample_batch_steps`); temperature: one, or one per row (N,).

    particles > 1: x holds groups of `particles` consecutive images that share one target;
    after each row they are weighted by the model's (tempered) probability of that row's known
    pixels that are `scored` (default: every known pixel; a Multi-Scale model's large stage
    does not score the pixels its small image fixed) and resampled when the effective sample
    size falls below particles / 2 (SMC).
    """
    n, channels, height, width = x.shape
    if particles > 1 and len(generators) > 1:
        raise ValueError("SMC resamples with one generator: a batched run of several requests has particles 1")
    stepper = STEPPERS[method](model, x, y, cond)
    # one per image, a new tensor always laid out alike: the compiled step is specialised on its inputs' strides
    temperature = torch.zeros(n, dtype=torch.float64, device=x.device) + temperature
    uniforms = torch.cat([torch.rand(height, width, channels, rows, generator=generator)
                          for generator, rows in generators], dim=3).to(x.device)  # (H, W, C, N)
    uniforms = uniforms.view(-1, channels, n, 1).unbind(0)  # per pixel in raster order, (C, N, 1) each
    known = ~mask
    log_weights = torch.zeros(n, dtype=torch.float64, device=x.device)
    ess_trace: list[Tensor] = []
    fill, score = mask.tolist(), (~mask if scored is None else scored).tolist()
    for r in range(height):
        for j in range(width):
            if fill[r][j]:
                # per channel (N, levels), stacked only when reported
                probs = stepper.draw(x, r, j, uniforms[r * width + j], temperature)
            else:  # a known pixel: one pass scores all its channels (channel c sees only channels < c)
                probs = tempered_log_probs(stepper.logits(x, r, j), temperature)  # (N, levels, C)
                if particles > 1 and score[r][j]:
                    log_weights += probs.gather(1, x[:, None, :, r, j]).sum((1, 2)).double()
            if every and (r * width + j + 1) % every == 0:
                _check_levels(x, model.levels, r, j + 1)
                yield Step(x, (r, j), _probs(probs), known, stage, list(ess_trace))
        _check_levels(x, model.levels, r, width)
        stepper.end_row(x, r)
        if particles > 1:
            ess_trace.append(_resample(stepper, x, log_weights, particles, generators[0][0],
                                       force=r == height - 1))
    if not every or (height * width) % every:  # the final record
        yield Step(x, (height - 1, width - 1), _probs(probs), known, stage, list(ess_trace))


def _check_levels(x: Tensor, levels: int, r: int, stop: int) -> None:
    """The sampler's guarantee that levels are in [0, levels): checked over row r up to column `stop` before a
    Step is yielded and when the row ends (earlier rows are already checked), so no other value is returned.
    Only non-finite model outputs (NaN weights) can break it."""
    low, high = (int(v) for v in torch.aminmax(x[:, :, r, :stop]))
    if low < 0 or high >= levels:
        raise RuntimeError(f"sampling produced level {low if low < 0 else high} in row {r}, outside [0, {levels}): "
                           f"the model's outputs are not finite (NaN or infinite weights?)")


def _probs(probs: list[Tensor] | Tensor) -> Tensor:
    """Per-channel probabilities, or a known pixel's log-probabilities -> (N, levels, C) probabilities."""
    return torch.stack(probs, dim=2) if isinstance(probs, list) else probs.exp()


def _resample(stepper, x: Tensor, log_weights: Tensor, particles: int, generator: torch.Generator,
              force: bool) -> Tensor:
    """SMC: per group of particles, multinomial resampling when ESS < particles / 2 (or when
    `force`, after the last row, so that each group's first particle is a weighted draw)
    -> the ESS before resampling, (groups,)."""
    grouped = log_weights.view(-1, particles)
    # a group whose every particle has probability 0 (at a tiny temperature, known pixels that greedy decoding
    # would never produce) carries no preference: equal weights, reset with the others
    hopeless = torch.isneginf(grouped).all(1)
    weights = torch.softmax(torch.where(hopeless[:, None], 0.0, grouped), dim=1)
    ess = 1.0 / (weights**2).sum(1)
    low = (ess < particles / 2) | force | hopeless
    if low.any():
        picks = torch.multinomial(weights.float().cpu(), particles, replacement=True, generator=generator)
        picks = picks.to(x.device)
        keep = torch.arange(particles, device=x.device).expand_as(picks)
        picks = torch.where(low[:, None], picks, keep)
        index = (picks + particles * torch.arange(len(picks), device=x.device)[:, None]).flatten()
        x[:] = x[index]
        stepper.reorder(index)
        grouped[low] = 0.0  # resampled particles carry equal weight
    return ess.float()


def _seeded(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # non-deterministic, and leaves torch's global generator alone
    else:
        generator.manual_seed(seed)
    return generator


def _check_every(every: Any) -> None:
    if not isinstance(every, int) or every < 0:
        raise ValueError(f"every must be a non-negative integer, got {every!r}")


def _sample_steps(model: Model, n: int = 1, y=None, image=None, mask=None, temperature: float = 1.0,
                  seed: int | None = None, method: str = "cached", every: int = 1,
                  particles: int = 1) -> Iterator[Step]:
    """The sampler itself; see `sample_steps`."""
    model.eval()
    device = next(model.parameters()).device
    large = model.large if isinstance(model, MultiScalePixelRNN) else model
    if not isinstance(particles, int) or particles < 1:
        raise ValueError(f"particles must be a positive integer, got {particles!r}")
    labels, x, fill = _prepare(model, n, y, image, mask, temperature, method, large.channels, large.height,
                               large.width, device)
    _check_every(every)
    generator = _seeded(seed)
    if particles > 1:
        x, labels = x.repeat_interleave(particles, 0), None if labels is None else labels.repeat_interleave(particles)
    yield from _run(model, x, fill, labels, temperature, [(generator, n * particles)], method, every, particles)


def _run(model: Model, x: Tensor, fill: Tensor, labels: Tensor | None, temperature: float | Tensor,
         generators: list[tuple[torch.Generator, int]], method: str, every: int, particles: int) -> Iterator[Step]:
    """Fill x's `fill` pixels in place, both stages of a Multi-Scale model; yield progress."""
    if not isinstance(model, MultiScalePixelRNN):
        yield from _generate(model, x, fill, labels, None, temperature, generators, method, every, particles, "full")
        return
    # Sec. 3.6: the small image first, then the full image given it
    small, small_fill = model.downsample(x).clone(), model.downsample(fill)
    for step in _generate(model.small, small, small_fill, labels, None, temperature, generators, method, every,
                          particles, "small"):
        if every:
            yield step
    x[..., :: model.factor, :: model.factor] = small
    open_pixels = model.open_pixels(model.large.height, model.large.width, x.device)
    scored = ~fill & open_pixels  # log p(x) has no large-model term for the pixels the small image fixes
    yield from _generate(model.large, x, fill & open_pixels, labels, model.condition(small), temperature, generators,
                         method, every, particles, "full", scored)


def _inference(steps: Iterator[Step]) -> Iterator[Step]:
    """`steps`, each computed in inference mode: no autograd and no version counting, a quarter less time per
    pixel than under no_grad (measured on the CPU: a binarized-MNIST sample 0.52 -> 0.39 s). The mode is per
    thread and a consumer (Gradio) may resume a generator on another thread: it is entered around each step, not
    across the yields. The tensors made inside are inference tensors: readable anywhere, written only in
    inference mode (`_snapshot` hands out normal copies)."""
    while True:
        with torch.inference_mode():
            step = next(steps, None)
        if step is None:
            return
        yield step


def sample_steps(model: Model, n: int = 1, y=None, image=None, mask=None, temperature: float = 1.0,
                 seed: int | None = None, method: str = "cached", every: int = 1,
                 particles: int = 1) -> Iterator[Step]:
    """Generate (or complete) n images, yielding a `Step` every `every` pixels and at the end.

    image (C, H, W) or (n, C, H, W) with mask (H, W) bool, True = to fill: completion; known
    pixels never change. Plain completion draws each unknown pixel given the pixels before it;
    particles > 1: context-aware completion by SMC, where each image is the pick of `particles`
    particles weighted by all the known pixels (Step.ess), which approaches the posterior
    p(unknown | known) as particles grow.
    temperature: any positive finite number; every level is drawn from softmax(logits / temperature)
    computed without overflow (`tempered_probs`), so tiny temperatures give the most likely levels.
    The target is the tempered model p_T (each conditional tempered): SMC weighs the known pixels with
    the same tempered conditionals, so it targets p_T(unknown | known), at T = 1 the model's posterior.
    The last Step's image is the result; its levels always lie in [0, levels).
    """
    for step in _inference(_sample_steps(model, n, y, image, mask, temperature, seed, method, every, particles)):
        yield _snapshot(step, n, particles)


@dataclass(frozen=True)
class SampleRequest:
    """One caller's part of a batched run (`sample_batch_steps`): n images of class y, at a temperature, seeded."""

    n: int = 1
    y: int | None = None
    temperature: float = 1.0
    seed: int | None = None


def sample_batch_steps(model: Model, requests: Sequence[SampleRequest], method: str = "cached",
                       every: int = 1) -> Iterator[Step]:
    """Generate for several requests in one batched run (how a server serves many callers at once), yielding
    `Step`s of all their images, in request order (request k's are rows sum(n before k) onwards). Every Step's
    image is the run's image tensor itself, written on as the run goes on (a server keeps only the latest):
    clone it to keep a snapshot. A Step's tensors are inference tensors (read them; clone to write).

    Each request's images are what `sample_steps(model, r.n, r.y, temperature=r.temperature, seed=r.seed)`
    gives alone: its uniforms come from its own seed, its temperature is its own; only the batched network's
    float rounding can differ (none seen in float64)."""
    return _inference(_batch_steps(model, list(requests), method, every))


def _batch_steps(model: Model, requests: list[SampleRequest], method: str, every: int) -> Iterator[Step]:
    model.eval()
    device = next(model.parameters()).device
    large = model.large if isinstance(model, MultiScalePixelRNN) else model
    if not requests:
        raise ValueError("no requests to sample for")
    labels = [_prepare(model, r.n, r.y, None, None, r.temperature, method, large.channels, large.height,
                       large.width, device)[0] for r in requests]
    _check_every(every)
    rows = sum(r.n for r in requests)
    x = torch.zeros(rows, large.channels, large.height, large.width, dtype=torch.long, device=device)
    fill = torch.ones(large.height, large.width, dtype=torch.bool, device=device)
    temperature = torch.tensor([r.temperature for r in requests for _ in range(r.n)], dtype=torch.float64,
                               device=device)
    generators = [(_seeded(r.seed), r.n) for r in requests]
    yield from _run(model, x, fill, None if labels[0] is None else torch.cat(labels), temperature, generators,
                    method, every, 1)


def _snapshot(step: Step, n: int, particles: int) -> Step:
    """What `sample_steps` hands out: copies (normal tensors, made outside inference mode) of the images that the
    loop goes on writing, the distribution and the known mask (the ESS trace, one tensor per row that no step
    changes, stays shared and read-only); with SMC, each image's first particle (after the last row, a weighted
    draw)."""
    image = step.image.view(n, particles, *step.image.shape[1:])[:, 0]
    probs = step.probs.view(n, particles, *step.probs.shape[1:])[:, 0]
    return replace(step, image=image.clone(), probs=probs.clone(), known=step.known.clone())


def sample(model: Model, n: int = 1, y=None, image=None, mask=None, temperature: float = 1.0,
           seed: int | None = None, method: str = "cached", particles: int = 1) -> Tensor:
    """-> LongTensor (n, C, H, W): samples, or completions of `image` where `mask` is True."""
    last = None
    for last in sample_steps(model, n, y, image, mask, temperature, seed, method, every=0, particles=particles):
        pass
    return last.image  # a snapshot


@torch.no_grad()
def class_posterior(model: Model, image: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """Bayes over the classes of a class-conditional model, given the known pixels of `image` (C, H, W) that come
    before the region `mask` (H, W) in generation order, under a uniform prior: p(y | prefix) ∝ p(prefix | y),
    exact because the prefix is scored given nothing after it (later known pixels would be scored given the
    region's old content). A Multi-Scale model's prefix lies in its small image. -> (posterior (classes,) float64,
    number of pixels in the prefix; 0: no evidence, the uniform prior)."""
    net = model.small if isinstance(model, MultiScalePixelRNN) else model
    if not net.num_classes:
        raise ValueError("this model is unconditional: it has no classes")
    x, mask = torch.as_tensor(image), torch.as_tensor(mask, dtype=torch.bool).cpu()
    if isinstance(model, MultiScalePixelRNN):
        x, mask = model.downsample(x), mask[:: model.factor, :: model.factor]
    first = int(mask.flatten().int().argmax()) if mask.any() else mask.numel()  # raster index of the first hole
    keep = (torch.arange(mask.numel()).reshape(mask.shape) < first).to(x.device)
    batch = x[None].expand(net.num_classes, *x.shape).long()
    per_class = net.log_prob(batch, torch.arange(net.num_classes, device=x.device), None, keep).double().cpu()
    return torch.softmax(per_class, 0), first


@torch.no_grad()
def likelihood_maps(model: Model, image: Tensor, y=None) -> dict[str, Tensor]:
    """One teacher-forced pass over image (C, H, W) -> per-pixel maps.

    nll_bits (C, H, W): -log2 p(x_sub-pixel | past); entropy_bits (C, H, W): entropy of each
    predictive distribution; probs (levels, C, H, W): every sub-pixel's distribution.
    nll_bits.sum() * ln 2 == -model.log_prob(image). For a Multi-Scale model: the maps of the
    full image given its small image, log p(open pixels | small): the pixels that the small image
    fixes are known, with NLL and entropy 0 and a one-hot distribution (the small image's own NLL
    is not in the maps).
    """
    model.eval()
    device = next(model.parameters()).device
    large = model.large if isinstance(model, MultiScalePixelRNN) else model
    labels, x, _ = _prepare(model, 1, y, image, None, 1.0, "reference", large.channels, large.height, large.width,
                            device)
    cond = model.condition(model.downsample(x)) if isinstance(model, MultiScalePixelRNN) else None
    log_probs = torch.log_softmax(large(x, labels, cond).float(), dim=1)[0]  # (levels, C, H, W)
    if isinstance(model, MultiScalePixelRNN):  # a fixed pixel is certain: log p = 0 at its value
        fixed = ~model.open_pixels(large.height, large.width, device)
        known = torch.full_like(log_probs, -math.inf).scatter_(0, x[0][None], 0.0)
        log_probs = torch.where(fixed, known, log_probs)
    nll = -log_probs.gather(0, x[0][None])[0] / math.log(2)
    probs = log_probs.exp()
    entropy = -torch.special.xlogy(probs, probs).sum(0) / math.log(2)  # 0 log 0 = 0
    return {"nll_bits": nll, "entropy_bits": entropy, "probs": probs}
