"""Sampling, completion and likelihood maps for every PixelRNN architecture.

Generation is H*W*C sequential steps in raster-then-R->G->B order. A *stepper* gives the
logits of one pixel given everything generated before it:
  ReferenceStepper  one full forward pass per step (the ground truth);
  CachedStepper     the same logits from per-layer caches, touching one pixel per layer
                    per step (Row LSTM: last row's states; Diagonal BiLSTM: forward stream
                    cell by cell, reverse stream once per finished row; PixelCNN: cached
                    activations inside each 3x3 window).
Mask A/B make a pixel's activations independent of its own last channel, so the pass that
gives the last channel's logits also leaves that pixel's final activations in the caches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelrnn.model import Model, MultiScalePixelRNN, PixelRNN, scale_pixels
from pixelrnn.nn import DiagonalBiLSTM, PixelCNNBlock, RowLSTM, lstm_cell

METHODS = ("cached", "reference")


def _bias_at(bias: Tensor | None, r: int, j: int) -> Tensor | float:
    """A layer's conditioning bias ((N, F, 1, 1) or (N, F, H, W)) at pixel (r, j) -> (N, F)."""
    if bias is None:
        return 0.0
    return bias[:, :, r if bias.shape[2] > 1 else 0, j if bias.shape[3] > 1 else 0]


class ReferenceStepper:
    """One full forward pass per step."""

    def __init__(self, model: PixelRNN, x: Tensor, y: Tensor | None, cond: Tensor | None):
        self.model, self.y, self.cond = model, y, cond

    def logits(self, x: Tensor, r: int, j: int) -> Tensor:
        """-> (N, levels, C) logits of pixel (r, j); sub-pixels before it in x must be final."""
        return self.model(x, self.y, self.cond)[:, :, :, r, j]

    def end_row(self, x: Tensor, r: int) -> None:
        pass

    def reorder(self, index: Tensor) -> None:
        self.y = None if self.y is None else self.y[index]
        self.cond = None if self.cond is None else self.cond[index]


class _PixelCNNCache:
    """A PixelCNN block at one pixel: caches relu(reduce(relu(f))) for its 3x3 mask-B window."""

    def __init__(self, block: PixelCNNBlock, n: int, height: int, width: int, bias: Tensor | None):
        w = block.reduce.weight
        self.block, self.bias = block, bias
        self.reduced = w.new_zeros(n, w.shape[0], height + 1, width + 2)  # padded: 1 row on top, 1 col each side
        self.conv_weight = block.conv.masked_weight()[:, :, :2].flatten(1)  # rows r-1 and r of the kernel

    def step(self, f: Tensor, r: int, j: int) -> Tensor:
        b = self.block
        self.reduced[:, :, r + 1, j + 1] = F.relu(F.linear(F.relu(f), b.reduce.masked_weight()[:, :, 0, 0], b.reduce.bias))
        window = self.reduced[:, :, r : r + 2, j : j + 3].flatten(1)
        t = F.linear(window, self.conv_weight, b.conv.bias) + _bias_at(self.bias, r, j)
        return f + F.linear(F.relu(t), b.expand.masked_weight()[:, :, 0, 0], b.expand.bias)

    def end_row(self, r: int) -> None:
        pass

    def reorder(self, index: Tensor) -> None:
        self.reduced = self.reduced[index]


class _RowLSTMCache:
    """A Row LSTM at one pixel: the previous row's states, this row's inputs (Sec. 3.1)."""

    def __init__(self, layer: RowLSTM, n: int, height: int, width: int, bias: Tensor | None):
        w = layer.input_to_state.masked_weight()  # (4h, 2h, 1, 3): taps left, centre, right (masked)
        self.layer, self.bias = layer, bias
        self.w_left, self.w_centre = w[:, :, 0, 0], w[:, :, 0, 1]
        self.inputs = w.new_zeros(n, w.shape[1], width + 1)  # this row's layer inputs, 1 col left pad
        self.h_row = w.new_zeros(n, layer.hidden, width)
        self.c_row = torch.zeros_like(self.h_row)
        self.c_above = torch.zeros_like(self.h_row)
        self.state_gates = layer.state_to_state(torch.zeros_like(self.h_row))  # (N, 4h, W) from row r-1

    def step(self, f: Tensor, r: int, j: int) -> Tensor:
        self.inputs[:, :, j + 1] = f
        gates = (F.linear(self.inputs[:, :, j], self.w_left) + F.linear(f, self.w_centre, self.layer.input_to_state.bias)
                 + _bias_at(self.bias, r, j) + self.state_gates[:, :, j])
        h, c = lstm_cell(gates, self.c_above[:, :, j])
        self.h_row[:, :, j], self.c_row[:, :, j] = h, c
        return h

    def end_row(self, r: int) -> None:
        self.state_gates = self.layer.state_to_state(self.h_row)
        self.c_above, self.h_row, self.c_row = self.c_row, torch.zeros_like(self.h_row), torch.zeros_like(self.c_row)

    def reorder(self, index: Tensor) -> None:
        for name in ("inputs", "h_row", "c_row", "c_above", "state_gates"):
            setattr(self, name, getattr(self, name)[index])


class _DiagonalCache:
    """A Diagonal BiLSTM at one pixel (Sec. 3.2).

    Forward stream: cell (r, j) from (r-1, j) and (r, j-1). Reverse stream: run right to
    left over a row once it is finished; its output reaches row r+1 (the one-row shift).
    """

    def __init__(self, layer: DiagonalBiLSTM, n: int, height: int, width: int, bias: Tensor | None):
        h = layer.hidden
        self.layer, self.bias, self.hidden = layer, bias, h
        self.w_in = layer.input_to_state.masked_weight()[:, :, 0, 0]  # (8h, 2h)
        self.w_above, self.w_left = layer.state_to_state[:, :, :h], layer.state_to_state[:, :, h:]  # (2, 4h, h)
        zeros = self.w_in.new_zeros(n, h, width)
        self.h_above, self.h_row, self.c_row = zeros, zeros.clone(), zeros.clone()  # forward stream
        self.reverse_above = zeros.clone()  # reverse-stream states of the previous row
        self.reverse_out = zeros.clone()  # reverse output of row r-1, i.e. shifted down into row r
        self.reverse_in = self.w_in.new_zeros(n, 4 * h, width)  # this row's reverse-stream gate inputs

    def step(self, f: Tensor, r: int, j: int) -> Tensor:
        gates_in = F.linear(f, self.w_in, self.layer.input_to_state.bias) + _bias_at(self.bias, r, j)
        forward_in, self.reverse_in[:, :, j] = gates_in.chunk(2, dim=1)
        h_left = self.h_row[:, :, j - 1] if j > 0 else torch.zeros_like(self.h_row[:, :, 0])
        c_left = self.c_row[:, :, j - 1] if j > 0 else torch.zeros_like(self.c_row[:, :, 0])
        gates = (forward_in + F.linear(self.h_above[:, :, j], self.w_above[0]) + F.linear(h_left, self.w_left[0])
                 + self.layer.state_bias[0, :, 0])
        h, c = lstm_cell(gates, c_left)
        self.h_row[:, :, j], self.c_row[:, :, j] = h, c
        return h + self.reverse_out[:, :, j]

    def end_row(self, r: int) -> None:
        h_right = c_right = torch.zeros_like(self.h_row[:, :, 0])
        reverse_row = torch.zeros_like(self.h_row)
        for j in reversed(range(self.h_row.shape[2])):
            gates = (self.reverse_in[:, :, j] + F.linear(self.reverse_above[:, :, j], self.w_above[1])
                     + F.linear(h_right, self.w_left[1]) + self.layer.state_bias[1, :, 0])
            h_right, c_right = lstm_cell(gates, c_right)
            reverse_row[:, :, j] = h_right
        self.reverse_above = self.reverse_out = reverse_row
        self.h_above, self.h_row, self.c_row = self.h_row, torch.zeros_like(self.h_row), torch.zeros_like(self.c_row)

    def reorder(self, index: Tensor) -> None:
        for name in ("h_above", "h_row", "c_row", "reverse_above", "reverse_out", "reverse_in"):
            setattr(self, name, getattr(self, name)[index])


class CachedStepper:
    """Exact incremental forward pass: every step touches one pixel in every layer."""

    def __init__(self, model: PixelRNN, x: Tensor, y: Tensor | None, cond: Tensor | None):
        n, _, height, width = x.shape
        self.model = model
        dtype = model.input_conv.weight.dtype
        self.pixels = x.new_zeros(n, model.channels, height + 3, width + 6, dtype=dtype)  # scaled, padded 3/3/3
        self.input_weight = model.input_conv.masked_weight()[:, :, :4].flatten(1)  # rows r-3..r of the 7x7 kernel
        self.input_bias = model.input_bias(y, cond)
        cache = {"pixelcnn": _PixelCNNCache, "row_lstm": _RowLSTMCache, "diagonal_bilstm": _DiagonalCache}[model.arch]
        self.layers = [cache(layer, n, height, width, model.layer_biases[k](y, cond))
                       for k, layer in enumerate(model.layers)]
        self.residuals = [] if model.arch == "pixelcnn" else [m.masked_weight()[:, :, 0, 0] for m in model.residuals]
        self.skips = [m.masked_weight()[:, :, 0, 0] for m in model.skips] if model.skip else []
        self.head = [m.masked_weight()[:, :, 0, 0] for m in model.head]

    def _write_row(self, x: Tensor, r: int, upto: int) -> None:
        self.pixels[:, :, r + 3, 3 : upto + 3] = scale_pixels(x[:, :, r, :upto], self.model.levels, self.pixels.dtype)

    def logits(self, x: Tensor, r: int, j: int) -> Tensor:
        m = self.model
        self._write_row(x, r, j + 1)
        window = self.pixels[:, :, r : r + 4, j : j + 7].flatten(1)
        f = F.linear(window, self.input_weight, m.input_conv.bias) + _bias_at(self.input_bias, r, j)  # (N, 2h)
        skip_sum = 0.0
        for k, layer in enumerate(self.layers):
            out = layer.step(f, r, j)
            f = out if m.arch == "pixelcnn" else f + F.linear(out, self.residuals[k], m.residuals[k].bias)
            if m.skip:
                skip_sum = skip_sum + F.linear(f, self.skips[k], m.skips[k].bias)
        out = skip_sum if m.skip else f
        logits = F.linear(F.relu(F.linear(F.relu(out), self.head[0], m.head[0].bias)), self.head[1], m.head[1].bias)
        return logits.view(-1, m.channels, m.levels).transpose(1, 2)  # (N, levels, C)

    def end_row(self, x: Tensor, r: int) -> None:
        self._write_row(x, r, x.shape[3])
        for layer in self.layers:
            layer.end_row(r)

    def reorder(self, index: Tensor) -> None:
        self.pixels = self.pixels[index]
        self.input_bias = None if self.input_bias is None or self.input_bias.shape[0] == 1 else self.input_bias[index]
        for layer in self.layers:
            layer.reorder(index)
            if layer.bias is not None and layer.bias.shape[0] > 1:
                layer.bias = layer.bias[index]


@dataclass
class Step:
    """A progress record: the partial images and what was just sampled."""

    image: Tensor  # (n, C, H, W) current images (pixels not yet final hold the input or zeros)
    position: tuple[int, int]  # (row, col) of the pixel just finished
    probs: Tensor  # (n, levels, C) the predictive distribution sampled from (or scored) at `position`
    done: Tensor  # (H, W) bool: pixels that are final
    stage: str = "full"  # "small" then "full" for the Multi-Scale PixelRNN
    ess: list[Tensor] = field(default_factory=list)  # SMC: effective sample size after each row, (n,) each


def _prepare(model: Model, n: int, y, image, mask, temperature: float, method: str, channels: int,
             height: int, width: int, device: torch.device) -> tuple[Tensor | None, Tensor, Tensor]:
    """Validate the arguments -> (labels (n,) or None, image (n, C, H, W), mask (H, W) bool)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
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
    if image.is_floating_point() or int(image.min()) < 0 or int(image.max()) >= model_levels(model):
        raise ValueError(f"image must hold integer levels in [0, {model_levels(model)})")
    mask = torch.ones(height, width, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
    if mask.shape != (height, width) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a ({height}, {width}) bool tensor (True = to fill), got "
                         f"{tuple(mask.shape)} {mask.dtype}")
    return labels, image.long().clone(memory_format=torch.contiguous_format), mask.to(device)


def model_levels(model: Model) -> int:
    return model.large.levels if isinstance(model, MultiScalePixelRNN) else model.levels


def _generate(model: PixelRNN, x: Tensor, mask: Tensor, y: Tensor | None, cond: Tensor | None, temperature: float,
              generator: torch.Generator, method: str, every: int, particles: int, stage: str) -> Iterator[Step]:
    """Fill the True pixels of `mask` in x (N, C, H, W) in raster order, in place; yield progress.

    particles > 1: x holds groups of `particles` consecutive images that share one target;
    after each row they are weighted by the model's probability of that row's known pixels
    and resampled when the effective sample size falls below particles / 2 (SMC).
    """
    n, channels, height, width = x.shape
    stepper = (CachedStepper if method == "cached" else ReferenceStepper)(model, x, y, cond)
    uniforms = torch.rand(height, width, channels, n, generator=generator).to(x.device)
    done = torch.zeros(height, width, dtype=torch.bool, device=x.device)
    log_weights = torch.zeros(n, dtype=torch.float64, device=x.device)
    ess_trace: list[Tensor] = []
    for r in range(height):
        for j in range(width):
            for c in range(channels):
                logits = stepper.logits(x, r, j)[:, :, c].float()  # (N, levels)
                if mask[r, j]:
                    probs = torch.softmax(logits / temperature, dim=1)
                    cdf = probs.cumsum(1)
                    x[:, c, r, j] = (cdf < uniforms[r, j, c, :, None] * cdf[:, -1:]).sum(1).clamp_max(probs.shape[1] - 1)
                else:
                    probs = torch.softmax(logits, dim=1)
                    if particles > 1:
                        log_weights += torch.log_softmax(logits, dim=1).gather(1, x[:, c, r, j, None])[:, 0].double()
                if c == 0:
                    pixel_probs = probs.new_empty(n, probs.shape[1], channels)
                pixel_probs[:, :, c] = probs
            done[r, j] = True
            if every and (r * width + j + 1) % every == 0:
                yield Step(x.clone(), (r, j), pixel_probs, done.clone(), stage, list(ess_trace))
        stepper.end_row(x, r)
        if particles > 1:
            ess_trace.append(_resample(stepper, x, log_weights, particles, generator, force=r == height - 1))
    if not every or (height * width) % every:  # the final record
        yield Step(x.clone(), (height - 1, width - 1), pixel_probs, done.clone(), stage, list(ess_trace))


def _resample(stepper, x: Tensor, log_weights: Tensor, particles: int, generator: torch.Generator,
              force: bool) -> Tensor:
    """SMC: per group of particles, multinomial resampling when ESS < particles / 2 (or when
    `force`, after the last row, so that each group's first particle is a weighted draw)
    -> the ESS before resampling, (groups,)."""
    grouped = log_weights.view(-1, particles)
    weights = torch.softmax(grouped, dim=1)
    ess = 1.0 / (weights**2).sum(1)
    low = (ess < particles / 2) | force
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


def sample_steps(model: Model, n: int = 1, y=None, image=None, mask=None, temperature: float = 1.0,
                 seed: int | None = None, method: str = "cached", every: int = 1,
                 particles: int = 1) -> Iterator[Step]:
    """Generate (or complete) n images, yielding a `Step` every `every` pixels and at the end.

    image (C, H, W) or (n, C, H, W) with mask (H, W) bool, True = to fill: completion; known
    pixels never change. particles > 1: context-aware completion by SMC, where each image
    is the pick of `particles` particles weighted by all the known pixels (Step.ess).
    The last Step's image is the result.
    """
    model.eval()
    device = next(model.parameters()).device
    multiscale = isinstance(model, MultiScalePixelRNN)
    large = model.large if multiscale else model
    if not isinstance(particles, int) or particles < 1:
        raise ValueError(f"particles must be a positive integer, got {particles!r}")
    labels, x, fill = _prepare(model, n, y, image, mask, temperature, method, large.channels, large.height,
                               large.width, device)
    if not isinstance(every, int) or every < 0:
        raise ValueError(f"every must be a non-negative integer, got {every!r}")
    generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    if particles > 1:
        x, labels = x.repeat_interleave(particles, 0), None if labels is None else labels.repeat_interleave(particles)
    with torch.inference_mode():
        cond = None
        if multiscale:  # Sec. 3.6: the small image first, then the full image given it
            small, small_fill = model.downsample(x).clone(), model.downsample(fill)
            for step in _generate(model.small, small, small_fill, labels, None, temperature, generator, method,
                                  every, particles, "small"):
                if every:
                    yield _first_particles(step, n, particles)
            x[..., :: model.factor, :: model.factor] = small
            fill = fill.clone()
            fill[:: model.factor, :: model.factor] = False  # the small image fixes those pixels
            cond = model.condition(small)
        for step in _generate(large, x, fill, labels, cond, temperature, generator, method, every, particles, "full"):
            yield _first_particles(step, n, particles)


def _first_particles(step: Step, n: int, particles: int) -> Step:
    """SMC: show each image's first particle (after the last row, a weighted draw)."""
    if particles == 1:
        return step
    return replace(step, image=step.image.view(n, particles, *step.image.shape[1:])[:, 0],
                   probs=step.probs.view(n, particles, *step.probs.shape[1:])[:, 0])


def sample(model: Model, n: int = 1, y=None, image=None, mask=None, temperature: float = 1.0,
           seed: int | None = None, method: str = "cached", particles: int = 1) -> Tensor:
    """-> LongTensor (n, C, H, W): samples, or completions of `image` where `mask` is True."""
    last = None
    for last in sample_steps(model, n, y, image, mask, temperature, seed, method, every=0, particles=particles):
        pass
    return last.image.clone()


@torch.no_grad()
def likelihood_maps(model: PixelRNN, image: Tensor, y=None) -> dict[str, Tensor]:
    """One teacher-forced pass over image (C, H, W) -> per-pixel maps.

    nll_bits (C, H, W): -log2 p(x_sub-pixel | past); entropy_bits (C, H, W): entropy of each
    predictive distribution; probs (levels, C, H, W): every sub-pixel's distribution.
    nll_bits.sum() * ln 2 == -model.log_prob(image).
    """
    model.eval()
    device = next(model.parameters()).device
    labels, x, _ = _prepare(model, 1, y, image, None, 1.0, "reference", model.channels, *image.shape[-2:],
                            device=device)
    log_probs = torch.log_softmax(model(x, labels).float(), dim=1)[0]  # (levels, C, H, W)
    nll = -log_probs.gather(0, x[0][None])[0] / math.log(2)
    entropy = -(log_probs.exp() * log_probs).sum(0) / math.log(2)
    return {"nll_bits": nll, "entropy_bits": entropy, "probs": log_probs.exp()}
