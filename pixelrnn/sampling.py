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
from torch import Tensor

from pixelrnn.model import Model, MultiScalePixelRNN, PixelRNN, scale_pixels
from pixelrnn.nn import DiagonalBiLSTM, PixelCNNBlock, RowLSTM, lstm_cell

METHODS = ("cached", "reference")


def _matrix(conv: torch.nn.Conv2d) -> Tensor:
    """A masked 1x1 conv's weight as a (in, out) matrix for `x @ matrix`."""
    return conv.masked_weight()[:, :, 0, 0].t().contiguous()


def _bias(constant: Tensor, conditional: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Fold a layer's conditioning bias into its constant bias.

    -> (bias (1 or N, F), per-pixel map (N, F, H, W) or None): a class label's bias is
    the same at every pixel; a conditioning map (Multi-Scale) varies per pixel.
    """
    if conditional is None:
        return constant[None], None
    if conditional.shape[2:] == (1, 1):
        return constant + conditional[:, :, 0, 0], None
    return constant[None], conditional


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


class _LayerCache:
    """Per-layer state of the cached stepper; `step` maps the layer input at (r, j) to its output."""

    tensors: tuple[str, ...] = ()  # batch-first state, reindexed by `reorder`

    def __init__(self, bias: Tensor, bias_map: Tensor | None):
        self.bias, self.bias_map = bias, bias_map

    def bias_at(self, r: int, j: int) -> Tensor:
        return self.bias if self.bias_map is None else self.bias + self.bias_map[:, :, r, j]

    @staticmethod
    def end_rows(caches: list[_LayerCache]) -> None:
        """Update the caches of all layers of one kind once a row is finished."""
        for cache in caches:
            cache.end_row()

    def end_row(self) -> None:
        pass

    def reorder(self, index: Tensor) -> None:
        for name in (*self.tensors, "bias", "bias_map"):
            value = getattr(self, name)
            if value is not None and value.shape[0] > 1:
                setattr(self, name, value[index])


class _PixelCNNCache(_LayerCache):
    """A PixelCNN block at one pixel: caches relu(reduce(relu(f))) for its 3x3 mask-B window."""

    tensors = ("reduced",)

    def __init__(self, block: PixelCNNBlock, n: int, height: int, width: int, conditional: Tensor | None):
        super().__init__(*_bias(block.conv.bias, conditional))
        self.reduce, self.reduce_bias = _matrix(block.reduce), block.reduce.bias
        self.expand, self.expand_bias = _matrix(block.expand), block.expand.bias
        self.conv = block.conv.masked_weight()[:, :, :2].flatten(1).t().contiguous()  # kernel rows r-1 and r
        self.reduced = self.conv.new_zeros(n, self.reduce.shape[1], height + 1, width + 2)  # 1 row / 1 col pad

    def step(self, f: Tensor, r: int, j: int) -> Tensor:
        self.reduced[:, :, r + 1, j + 1] = torch.addmm(self.reduce_bias, f.relu(), self.reduce).relu_()
        window = self.reduced[:, :, r : r + 2, j : j + 3].flatten(1)
        t = torch.addmm(self.bias_at(r, j), window, self.conv).relu_()
        return torch.addmm(f + self.expand_bias, t, self.expand)


class _RowLSTMCache(_LayerCache):
    """A Row LSTM at one pixel: the previous row's states, this row's inputs (Sec. 3.1)."""

    tensors = ("inputs", "h_row", "c_row", "c_above", "row_gates")

    def __init__(self, layer: RowLSTM, n: int, height: int, width: int, conditional: Tensor | None):
        super().__init__(*_bias(layer.input_to_state.bias, conditional))
        w = layer.input_to_state.masked_weight()  # (4h, 2h, 1, 3): taps left, centre, right (masked)
        self.input_to_state = torch.cat([w[:, :, 0, 0], w[:, :, 0, 1]], dim=1).t().contiguous()  # [left | centre]
        self.state_to_state = layer.state_to_state
        self.inputs = w.new_zeros(n, width + 1, w.shape[1])  # this row's layer inputs, one zero column on the left
        self.h_row = w.new_zeros(n, width, layer.hidden)
        self.c_row, self.c_above = torch.zeros_like(self.h_row), torch.zeros_like(self.h_row)
        self.end_row_gates()

    def end_row_gates(self) -> None:
        """State-to-state gates from the finished row (zeros above row 0) plus the constant bias: (N, W, 4h)."""
        self.row_gates = self.state_to_state(self.h_row.transpose(1, 2)).transpose(1, 2) + self.bias[:, None]

    def step(self, f: Tensor, r: int, j: int) -> Tensor:
        self.inputs[:, j + 1] = f
        bias = self.row_gates[:, j] if self.bias_map is None else self.row_gates[:, j] + self.bias_map[:, :, r, j]
        gates = torch.addmm(bias, self.inputs[:, j : j + 2].flatten(1), self.input_to_state)
        h, self.c_row[:, j] = lstm_cell(gates, self.c_above[:, j])
        self.h_row[:, j] = h
        return h

    def end_row(self) -> None:
        self.end_row_gates()
        self.c_above, self.c_row = self.c_row, torch.zeros_like(self.c_row)


class _DiagonalCache(_LayerCache):
    """A Diagonal BiLSTM at one pixel (Sec. 3.2).

    Forward stream: cell (r, j) from (r-1, j) and (r, j-1), its gates and the reverse
    stream's input in one matmul. Reverse stream: run right to left over a row once it is
    finished; its output reaches row r+1 (the one-row shift).
    """

    tensors = ("h_above", "h_row", "c_row", "reverse", "reverse_in")

    def __init__(self, layer: DiagonalBiLSTM, n: int, height: int, width: int, conditional: Tensor | None):
        h = layer.hidden
        w_in = layer.input_to_state.masked_weight()[:, :, 0, 0]  # (8h, 2h): [forward gates; reverse gates]
        w_above, w_left = layer.state_to_state[:, :, :h], layer.state_to_state[:, :, h:]  # (2, 4h, h) each
        state_bias = layer.state_bias[:, :, 0]  # (2, 4h)
        # x = [f (2h) | h(r-1, j) (h) | h(r, j-1) (h)] -> [forward gates (4h) | reverse stream input (4h)]
        forward = torch.cat([w_in[: 4 * h], w_above[0], w_left[0]], dim=1)
        reverse = torch.cat([w_in[4 * h :], w_in.new_zeros(4 * h, 2 * h)], dim=1)
        self.weight = torch.cat([forward, reverse]).t().contiguous()
        super().__init__(*_bias(layer.input_to_state.bias + torch.cat([state_bias[0], state_bias.new_zeros(4 * h)]),
                                conditional))
        self.reverse_weight = torch.cat([w_above[1], w_left[1]], dim=1).t().contiguous()  # [above | right] -> 4h
        self.reverse_bias = state_bias[1]
        self.hidden = h
        zeros = w_in.new_zeros(n, width + 1, h)  # column j+1 holds pixel j; column 0 is the zero left edge
        self.h_row, self.c_row, self.h_above = zeros, zeros.clone(), zeros.clone()
        self.reverse = w_in.new_zeros(n, width, h)  # reverse stream of row r-1 = its shifted input to row r
        self.reverse_in = w_in.new_zeros(n, width, 4 * h)

    def step(self, f: Tensor, r: int, j: int) -> Tensor:
        gates = torch.addmm(self.bias_at(r, j), torch.cat([f, self.h_above[:, j + 1], self.h_row[:, j]], 1),
                            self.weight)
        self.reverse_in[:, j] = gates[:, 4 * self.hidden :]
        h, self.c_row[:, j + 1] = lstm_cell(gates[:, : 4 * self.hidden], self.c_row[:, j])
        self.h_row[:, j + 1] = h
        return h + self.reverse[:, j]

    @staticmethod
    def end_rows(caches: list[_DiagonalCache]) -> None:
        """Run every layer's reverse stream right to left over the finished row, all layers at once:
        they depend only on inputs cached during the row and on the row above."""
        weight = torch.stack([c.reverse_weight for c in caches])  # (L, 2h, 4h)
        reverse_in = torch.stack([c.reverse_in for c in caches]) + torch.stack([c.reverse_bias for c in caches])[
            :, None, None]  # (L, N, W, 4h)
        reverse = torch.stack([c.reverse for c in caches])  # (L, N, W, h): row r-1's states, overwritten by row r's
        layers, n, width, h = reverse.shape
        h_right = c_right = reverse.new_zeros(layers * n, h)
        for j in reversed(range(width)):
            above_right = torch.cat([reverse[:, :, j], h_right.view(layers, n, h)], dim=2)
            gates = torch.baddbmm(reverse_in[:, :, j], above_right, weight)
            h_right, c_right = lstm_cell(gates.view(layers * n, 4 * h), c_right)
            reverse[:, :, j] = h_right.view(layers, n, h)
        for k, c in enumerate(caches):
            c.reverse = reverse[k]
            c.h_above, c.h_row, c.c_row = c.h_row, torch.zeros_like(c.h_row), torch.zeros_like(c.c_row)


class CachedStepper:
    """Exact incremental forward pass: every step touches one pixel in every layer."""

    def __init__(self, model: PixelRNN, x: Tensor, y: Tensor | None, cond: Tensor | None):
        n, _, height, width = x.shape
        self.model = model
        weight = model.input_conv.masked_weight()
        self.pixels = weight.new_zeros(n, model.channels, height + 3, width + 6)  # scaled; pad top 3, sides 3
        self.input_weight = weight[:, :, :4].flatten(1).t().contiguous()  # kernel rows r-3..r
        self.input = _LayerCache(*_bias(model.input_conv.bias, model.input_bias(y, cond)))
        cache = {"pixelcnn": _PixelCNNCache, "row_lstm": _RowLSTMCache, "diagonal_bilstm": _DiagonalCache}[model.arch]
        self.layers = [cache(layer, n, height, width, model.layer_biases[k](y, cond))
                       for k, layer in enumerate(model.layers)]
        self.residuals = [] if model.arch == "pixelcnn" else [(_matrix(m), m.bias) for m in model.residuals]
        if model.skip:  # the skip connections' sum as one matmul over all layers' outputs
            self.skip_weight = torch.cat([_matrix(m) for m in model.skips])
            self.skip_bias = torch.stack([m.bias for m in model.skips]).sum(0)
        self.head = [(_matrix(m), m.bias) for m in model.head]

    def _write(self, x: Tensor, r: int, start: int, stop: int) -> None:
        """Copy pixels (r, start:stop) of x into the scaled, padded input."""
        self.pixels[:, :, r + 3, start + 3 : stop + 3] = scale_pixels(x[:, :, r, start:stop], self.model.levels,
                                                                     self.pixels.dtype)

    def logits(self, x: Tensor, r: int, j: int) -> Tensor:
        m = self.model
        self._write(x, r, max(j - 1, 0), j + 1)  # this pixel, and the left one's last channel
        window = self.pixels[:, :, r : r + 4, j : j + 7].flatten(1)
        f = torch.addmm(self.input.bias_at(r, j), window, self.input_weight)  # (N, 2h)
        outputs = []
        for k, layer in enumerate(self.layers):
            out = layer.step(f, r, j)
            f = out if m.arch == "pixelcnn" else torch.addmm(f + self.residuals[k][1], out, self.residuals[k][0])
            outputs.append(f)
        out = torch.addmm(self.skip_bias, torch.cat(outputs, 1), self.skip_weight) if m.skip else f
        (w0, b0), (w1, b1) = self.head
        logits = torch.addmm(b1, torch.addmm(b0, out.relu(), w0).relu_(), w1)
        return logits.view(-1, m.channels, m.levels).transpose(1, 2)  # (N, levels, C)

    def end_row(self, x: Tensor, r: int) -> None:
        self._write(x, r, x.shape[3] - 1, x.shape[3])  # the row's last pixel's last channel
        type(self.layers[0]).end_rows(self.layers)

    def reorder(self, index: Tensor) -> None:
        self.pixels = self.pixels[index]
        self.input.reorder(index)
        for layer in self.layers:
            layer.reorder(index)


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
    if image.is_floating_point() or int(image.min()) < 0 or int(image.max()) >= _levels(model):
        raise ValueError(f"image must hold integer levels in [0, {_levels(model)})")
    mask = torch.ones(height, width, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
    if mask.shape != (height, width) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a ({height}, {width}) bool tensor (True = to fill), got "
                         f"{tuple(mask.shape)} {mask.dtype}")
    return labels, image.long().clone(memory_format=torch.contiguous_format), mask.to(device)


def _levels(model: Model) -> int:
    return model.large.levels if isinstance(model, MultiScalePixelRNN) else model.levels


def _generate(model: PixelRNN, x: Tensor, mask: Tensor, y: Tensor | None, cond: Tensor | None, temperature: float,
              generator: torch.Generator, method: str, every: int, particles: int, stage: str,
              scored: Tensor | None = None) -> Iterator[Step]:
    """Fill the True pixels of `mask` in x (N, C, H, W) in raster order, in place; yield progress.

    particles > 1: x holds groups of `particles` consecutive images that share one target;
    after each row they are weighted by the model's (tempered) probability of that row's known
    pixels that are `scored` (default: every known pixel; a Multi-Scale model's large stage
    does not score the pixels its small image fixed) and resampled when the effective sample
    size falls below particles / 2 (SMC).
    """
    n, channels, height, width = x.shape
    stepper = (CachedStepper if method == "cached" else ReferenceStepper)(model, x, y, cond)
    uniforms = torch.rand(height, width, channels, n, generator=generator).to(x.device)
    done = ~mask  # pixels that are final: the known ones from the start
    log_weights = torch.zeros(n, dtype=torch.float64, device=x.device)
    ess_trace: list[Tensor] = []
    fill, score = mask.tolist(), (~mask if scored is None else scored).tolist()
    for r in range(height):
        for j in range(width):
            if fill[r][j]:
                probs = []  # per channel (N, levels), stacked only when reported
                for c in range(channels):  # R, then G given R, then B given R and G
                    channel_probs = tempered_probs(stepper.logits(x, r, j)[:, :, c], temperature)
                    cdf = channel_probs.cumsum(1)
                    x[:, c, r, j] = torch.searchsorted(cdf, uniforms[r, j, c, :, None] * cdf[:, -1:])[:, 0]
                    probs.append(channel_probs)
            else:  # a known pixel: one pass scores all its channels (channel c sees only channels < c)
                probs = tempered_log_probs(stepper.logits(x, r, j), temperature)  # (N, levels, C)
                if particles > 1 and score[r][j]:
                    log_weights += probs.gather(1, x[:, None, :, r, j]).sum((1, 2)).double()
            done[r, j] = True
            if every and (r * width + j + 1) % every == 0:
                _check_levels(x, model.levels, r, j + 1)
                yield Step(x.clone(), (r, j), _probs(probs), done.clone(), stage, list(ess_trace))
        _check_levels(x, model.levels, r, width)
        stepper.end_row(x, r)
        if particles > 1:
            ess_trace.append(_resample(stepper, x, log_weights, particles, generator, force=r == height - 1))
    if not every or (height * width) % every:  # the final record
        yield Step(x.clone(), (height - 1, width - 1), _probs(probs), done.clone(), stage, list(ess_trace))


def _tempered(logits: Tensor, temperature: float) -> Tensor:
    """(logits - their max) / temperature over dim 1, in float64: no overflow for any positive temperature.

    Dividing float32 logits by a tiny temperature overflows (at t = 1e-40, logits / t is inf and softmax NaN).
    Here the largest logit is subtracted first, in float64, where no positive temperature rounds to 0:
    (l - max) / t is 0 for the largest logit and at worst -inf, whose exp is 0, for the others. A tiny
    temperature is greedy decoding (ties share the mass), a huge one the uniform distribution.
    """
    shifted = logits.double()
    return (shifted - shifted.amax(1, keepdim=True)) / temperature


def tempered_probs(logits: Tensor, temperature: float) -> Tensor:
    """softmax(logits / temperature) over dim 1, in float32: what a drawn sub-pixel is sampled from."""
    return torch.softmax(_tempered(logits, temperature), dim=1).float()


def tempered_log_probs(logits: Tensor, temperature: float) -> Tensor:
    """log_softmax(logits / temperature) over dim 1, in float32 (finite, or -inf): what a known sub-pixel is scored
    with. Drawn and scored sub-pixels use the same conditionals: the sampler's target is the *tempered model*,
    p_T(x) = prod_i softmax(logits_i / T)[x_i], a normalised autoregressive model (at T = 1 the model itself),
    and SMC completion conditions p_T on the known pixels."""
    return torch.log_softmax(_tempered(logits, temperature), dim=1).float()


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


def _sample_steps(model: Model, n: int = 1, y=None, image=None, mask=None, temperature: float = 1.0,
                  seed: int | None = None, method: str = "cached", every: int = 1,
                  particles: int = 1) -> Iterator[Step]:
    """The sampler itself; see `sample_steps`."""
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
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # non-deterministic, and leaves torch's global generator alone
    else:
        generator.manual_seed(seed)
    if particles > 1:
        x, labels = x.repeat_interleave(particles, 0), None if labels is None else labels.repeat_interleave(particles)
    cond = scored = None
    if multiscale:  # Sec. 3.6: the small image first, then the full image given it
        small, small_fill = model.downsample(x).clone(), model.downsample(fill)
        for step in _generate(model.small, small, small_fill, labels, None, temperature, generator, method,
                              every, particles, "small"):
            if every:
                yield _first_particles(step, n, particles)
        x[..., :: model.factor, :: model.factor] = small
        open_pixels = model.open_pixels(large.height, large.width, device)
        scored = ~fill & open_pixels  # log p(x) has no large-model term for the pixels the small image fixes
        fill = fill & open_pixels
        cond = model.condition(small)
    for step in _generate(large, x, fill, labels, cond, temperature, generator, method, every, particles, "full",
                          scored):
        yield _first_particles(step, n, particles)


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
    steps = _sample_steps(model, n, y, image, mask, temperature, seed, method, every, particles)
    while True:
        # grad mode is per thread and a consumer (Gradio) may resume us on another thread:
        # switch autograd off around each step, not across the yields
        with torch.no_grad():
            step = next(steps, None)
        if step is None:
            return
        yield step


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
