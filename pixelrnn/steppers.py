"""Steppers: the logits of one pixel given everything generated before it, for every PixelRNN architecture.

  ReferenceStepper  one full forward pass per step (the ground truth);
  CachedStepper     the same logits from per-layer caches, touching one pixel per layer
                    per step (Row LSTM: last row's states; Diagonal BiLSTM: forward stream
                    cell by cell, reverse stream once per finished row; PixelCNN: the 3x3
                    conv's row above once per row, its own row's two taps per pixel);
  StackedStepper    (`pixelrnn.stacked`) the cached stepper's arithmetic as one compiled graph per step.
Mask A/B make a pixel's activations independent of its own last channel, so the pass that
gives the last channel's logits also leaves that pixel's final activations in the caches.
A stepper's `draw` samples one sub-pixel from its logits (`draw`, the tempered distribution); `pixelrnn.sampling`
runs the loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelrnn.model import PixelRNN, scale_pixels
from pixelrnn.nn import DiagonalBiLSTM, PixelCNNBlock, RowLSTM, group_end, lstm_cell

Layer = tuple[Tensor, Tensor]  # a 1x1 conv as (matrix (in, out), bias (out,))


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


def _tempered(logits: Tensor, temperature: float | Tensor) -> Tensor:
    """(logits - their max) / temperature over dim 1, in float64: no overflow for any positive temperature.

    Dividing float32 logits by a tiny temperature overflows (at t = 1e-40, logits / t is inf and softmax NaN).
    Here the largest logit is subtracted first, in float64, where no positive temperature rounds to 0:
    (l - max) / t is 0 for the largest logit and at worst -inf, whose exp is 0, for the others. A tiny
    temperature is greedy decoding (ties share the mass), a huge one the uniform distribution.
    """
    shifted = logits.double()
    if isinstance(temperature, Tensor):  # one per row (N,)
        temperature = temperature.to(shifted).view(-1, *[1] * (shifted.dim() - 1))
    return (shifted - shifted.amax(1, keepdim=True)) / temperature


def tempered_probs(logits: Tensor, temperature: float | Tensor) -> Tensor:
    """softmax(logits / temperature) over dim 1, in float32: what a drawn sub-pixel is sampled from."""
    return torch.softmax(_tempered(logits, temperature), dim=1).float()


def tempered_log_probs(logits: Tensor, temperature: float | Tensor) -> Tensor:
    """log_softmax(logits / temperature) over dim 1, in float32 (finite, or -inf): what a known sub-pixel is scored
    with. Drawn and scored sub-pixels use the same conditionals: the sampler's target is the *tempered model*,
    p_T(x) = prod_i softmax(logits_i / T)[x_i], a normalised autoregressive model (at T = 1 the model itself),
    and SMC completion conditions p_T on the known pixels."""
    return torch.log_softmax(_tempered(logits, temperature), dim=1).float()


def draw(logits: Tensor, u: Tensor, temperature: float | Tensor) -> tuple[Tensor, Tensor]:
    """One sub-pixel's logits (N, levels) and uniforms u (N, 1) -> (its levels (N, 1), by inverse CDF of the
    tempered distribution; that distribution (N, levels))."""
    probs = tempered_probs(logits, temperature)
    cdf = probs.cumsum(1)
    return torch.searchsorted(cdf, u * cdf[:, -1:]), probs


def output_layers(skip: Layer | None, head: list[Layer], channels: int, levels: int, c: int | None) -> list[Layer]:
    """The output layers (the skip connections' sum, if any, and the two 1x1 convs of the head) cut to what channel
    c's logits see (c None: all): mask B lets an output of colour group c see inputs of groups <= c only, so the skip
    sum's and the first head conv's outputs of groups <= c, and the last conv's outputs of group c (its `levels`
    logits) suffice: a third of the head's work on average for RGB. -> [skip or None, head0, head1]."""
    (w0, b0), (w1, b1) = head
    if c is None:
        return [skip, (w0, b0), (w1, b1)]
    features, hidden = group_end(w0.shape[0], channels, c), group_end(w0.shape[1], channels, c)
    logits = slice(c * levels, (c + 1) * levels)
    return [None if skip is None else (skip[0][:, :features], skip[1][:features]), (w0[:features, :hidden], b0[:hidden]),
            (w1[:hidden, logits], b1[logits])]


def addmm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x @ weight + bias in one operation (eager)."""
    return torch.addmm(bias, x, weight)


def run_output_layers(layers: list[Layer], outputs: list[Tensor],
                      linear: Callable[[Tensor, Tensor, Tensor], Tensor] = addmm) -> Tensor:
    """Every layer's output (N, F) each, or its first features (groups <= c, all channel c's logits see) -> logits
    (N, C * levels), or channel c's (N, levels) (`output_layers`); `linear(x, weight, bias)` computes each layer."""
    skip, (w0, b0), (w1, b1) = layers
    if skip is None:
        out = outputs[-1][:, : w0.shape[0]]
    else:
        weight, kept = skip[0], outputs[0].shape[1]
        if kept * len(outputs) < len(weight):  # each layer's rows for the features kept
            weight = weight.view(len(outputs), -1, weight.shape[1])[:, :kept].flatten(0, 1)
        out = linear(torch.cat(outputs, 1), weight, skip[1])
    return linear(linear(out.relu(), w0, b0).relu_(), w1, b1)


class Stepper:
    """What the sampler asks of a stepper (`logits`, `draw`, `end_row`, `reorder`)."""

    def logits(self, x: Tensor, r: int, j: int) -> Tensor:
        """-> (N, levels, C) logits of pixel (r, j); sub-pixels before it in x must be final."""
        raise NotImplementedError

    def channel_logits(self, x: Tensor, r: int, j: int, c: int) -> Tensor:
        """-> (N, levels) logits of sub-pixel c of pixel (r, j)."""
        return self.logits(x, r, j)[:, :, c]

    def draw(self, x: Tensor, r: int, j: int, u: Tensor, temperature: float | Tensor) -> list[Tensor]:
        """Draw pixel (r, j) into x, R, then G given R, then B given R and G, with uniforms u (C, N, 1) -> each
        sub-pixel's distribution (N, levels)."""
        distributions = []
        for c in range(x.shape[1]):
            level, probs = draw(self.channel_logits(x, r, j, c), u[c], temperature)
            x[:, c, r, j] = level[:, 0]
            distributions.append(probs)
        return distributions

    def end_row(self, x: Tensor, r: int) -> None:
        """Row r of x is final."""

    def reorder(self, index: Tensor) -> None:
        """SMC resampling: image k of the batch becomes image index[k]."""


class ReferenceStepper(Stepper):
    """One full forward pass per step."""

    def __init__(self, model: PixelRNN, x: Tensor, y: Tensor | None, cond: Tensor | None):
        self.model, self.y, self.cond = model, y, cond

    def logits(self, x: Tensor, r: int, j: int) -> Tensor:
        return self.model(x, self.y, self.cond)[:, :, :, r, j]

    def reorder(self, index: Tensor) -> None:
        self.y = None if self.y is None else self.y[index]
        self.cond = None if self.cond is None else self.cond[index]


class _LayerCache:
    """Per-layer state of the cached stepper; `step` maps the layer input at (r, j) to its output.

    A layer keeps its per-column states in Python lists of (N, F) tensors: looking one up or storing one costs
    no tensor operation (a step is a few dozen tiny operations, each ~2 us of overhead); a finished row's are
    stacked once. A step may run several times at one pixel (once per channel): it overwrites.
    """

    tensors: tuple[str, ...] = ()  # batch-first state (tensors or lists of them), reindexed by `reorder`

    def __init__(self, bias: Tensor, bias_map: Tensor | None):
        self.bias, self.bias_map = bias, bias_map

    def bias_at(self, r: int, j: int) -> Tensor:
        return self.plus_map(self.bias, r, j)

    def plus_map(self, bias: Tensor, r: int, j: int) -> Tensor:
        """A bias at pixel (r, j), plus the conditioning map's there if there is one."""
        return bias if self.bias_map is None else bias + self.bias_map[:, :, r, j]

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
            if isinstance(value, list):
                setattr(self, name, [None if t is None else t[index] for t in value])
            elif value is not None and value.shape[0] > 1:
                setattr(self, name, value[index])


class _PixelCNNCache(_LayerCache):
    """A PixelCNN block at one pixel: relu(reduce(relu(f))) per column of this row; the 3x3 mask-B conv's row
    above, for every column at once when a row starts; its own row's taps (left, centre) per pixel."""

    tensors = ("reduced", "above")

    def __init__(self, block: PixelCNNBlock, n: int, height: int, width: int, conditional: Tensor | None):
        super().__init__(*_bias(block.conv.bias, conditional))
        self.reduce, self.reduce_bias = _matrix(block.reduce), block.reduce.bias
        self.expand, self.expand_bias = _matrix(block.expand), block.expand.bias
        w = block.conv.masked_weight()  # (h, h, 3, 3): mask B keeps row r-1 and (r, j-1), (r, j)
        self.conv_above = w[:, :, 0]  # (h, h, 3): conv1d over the row above
        self.conv_row = torch.cat([w[:, :, 1, 0], w[:, :, 1, 1]], dim=1).t().contiguous()  # [left | centre]
        self.zero = w.new_zeros(n, w.shape[1])
        self.reduced = [self.zero] * (width + 1)  # element j+1 holds column j of this row; element 0 the zero edge
        self.above = [self.bias.expand(n, -1)] * width  # zeros above row 0: the constant bias alone

    def step(self, f: Tensor, r: int, j: int) -> Tensor:
        self.reduced[j + 1] = t = torch.addmm(self.reduce_bias, f.relu(), self.reduce).relu_()
        t = torch.addmm(self.plus_map(self.above[j], r, j), torch.cat([self.reduced[j], t], 1), self.conv_row).relu_()
        return torch.addmm(f + self.expand_bias, t, self.expand)

    def end_row(self) -> None:
        """The next row's bias per column (N, h): the conv's row-above taps over the finished row; a fresh row."""
        row = torch.stack(self.reduced[1:], 2)  # (N, h, W)
        self.above = list((F.conv1d(row, self.conv_above, padding=1) + self.bias[:, :, None]).unbind(2))
        self.reduced = [self.zero] + [None] * (len(self.reduced) - 1)


class _RowLSTMCache(_LayerCache):
    """A Row LSTM at one pixel: the previous row's states, this row's inputs (Sec. 3.1)."""

    tensors = ("inputs", "h_row", "c_row", "c_above", "row_gates")

    def __init__(self, layer: RowLSTM, n: int, height: int, width: int, conditional: Tensor | None):
        super().__init__(*_bias(layer.input_to_state.bias, conditional))
        w = layer.input_to_state.masked_weight()  # (4h, 2h, 1, 3): taps left, centre, right (masked)
        self.input_to_state = torch.cat([w[:, :, 0, 0], w[:, :, 0, 1]], dim=1).t().contiguous()  # [left | centre]
        self.state_to_state = layer.state_to_state
        self.zero_input, zero_state = w.new_zeros(n, w.shape[1]), w.new_zeros(n, layer.hidden)
        self.c_row = [zero_state] * width  # read as the row above's once the row ends
        self.h_row = self.c_row.copy()
        self.end_row()

    def step(self, f: Tensor, r: int, j: int) -> Tensor:
        self.inputs[j + 1] = f
        gates = torch.addmm(self.plus_map(self.row_gates[j], r, j), torch.cat(self.inputs[j : j + 2], 1),
                            self.input_to_state)
        self.h_row[j], self.c_row[j] = lstm_cell(gates, self.c_above[j])
        return self.h_row[j]

    def end_row(self) -> None:
        """The finished row's state-to-state gates plus the constant bias, per column (N, 4h); a fresh row."""
        h_row = torch.stack(self.h_row, 2)  # (N, h, W)
        self.row_gates = list((self.state_to_state(h_row) + self.bias[:, :, None]).unbind(2))
        self.c_above, width = self.c_row, len(self.c_row)
        self.inputs = [self.zero_input] + [None] * width  # this row's layer inputs after a zero left edge
        self.h_row, self.c_row = [None] * width, [None] * width


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
        self.zero = w_in.new_zeros(n, h)
        self.h_row = [self.zero] * (width + 1)  # element j+1 holds column j; element 0 is the zero left edge
        self.reverse = [self.zero] * width  # reverse stream of row r-1 = its shifted input to row r
        self.new_row()

    def new_row(self) -> None:
        width = len(self.reverse)
        self.h_above = self.h_row
        self.h_row, self.c_row = [self.zero] + [None] * width, [self.zero] + [None] * width
        self.reverse_in = [None] * width

    def step(self, f: Tensor, r: int, j: int) -> Tensor:
        gates = torch.addmm(self.bias_at(r, j), torch.cat([f, self.h_above[j + 1], self.h_row[j]], 1), self.weight)
        self.reverse_in[j] = gates[:, 4 * self.hidden :]
        self.h_row[j + 1], self.c_row[j + 1] = lstm_cell(gates[:, : 4 * self.hidden], self.c_row[j])
        return self.h_row[j + 1] + self.reverse[j]

    @staticmethod
    def end_rows(caches: list[_DiagonalCache]) -> None:
        """Run every layer's reverse stream right to left over the finished row, all layers at once:
        they depend only on inputs cached during the row and on the row above."""
        reverse = reverse_stream(torch.stack([torch.stack(c.reverse) for c in caches]),
                                 torch.stack([torch.stack(c.reverse_in) for c in caches]),
                                 torch.stack([c.reverse_bias for c in caches]),
                                 torch.stack([c.reverse_weight for c in caches]))
        for k, c in enumerate(caches):
            c.reverse = list(reverse[k].unbind(0))
            c.new_row()


def reverse_stream(above: Tensor, inputs: Tensor, bias: Tensor, weight: Tensor) -> Tensor:
    """The Diagonal BiLSTM's reverse stream over a finished row, right to left, all layers at once (Sec. 3.2):
    above (L, W, N, h) the row above's, inputs (L, W, N, 4h) its input-to-state gates, bias (L, 4h), weight
    (L, 2h, 4h) from [above | right] -> the row's (L, W, N, h)."""
    layers, width, n, hidden = above.shape
    inputs, row = inputs + bias[:, None, None], torch.empty_like(above)
    h_right = c_right = above.new_zeros(layers * n, hidden)
    for j in reversed(range(width)):
        above_right = torch.cat([above[:, j], h_right.view(layers, n, hidden)], dim=2)
        gates = torch.baddbmm(inputs[:, j], above_right, weight)
        h_right, c_right = lstm_cell(gates.view(layers * n, 4 * hidden), c_right)
        row[:, j] = h_right.view(layers, n, hidden)
    return row


class CachedStepper(Stepper):
    """Exact incremental forward pass: every step touches one pixel in every layer."""

    def __init__(self, model: PixelRNN, x: Tensor, y: Tensor | None, cond: Tensor | None):
        n, _, height, width = x.shape
        self.model = model
        weight = model.input_conv.masked_weight()
        self.pixels = weight.new_zeros(n, model.channels, height + 3, width + 6)  # scaled; pad top 3, sides 3
        self.input_weight = weight[:, :, :4].flatten(1).t().contiguous()  # kernel rows r-3..r
        cond = model.conditioning(y, cond)
        self.input = _LayerCache(*_bias(model.input_conv.bias, model.input_bias(y, cond)))
        cache = {"pixelcnn": _PixelCNNCache, "row_lstm": _RowLSTMCache, "diagonal_bilstm": _DiagonalCache}[model.arch]
        self.layers = [cache(layer, n, height, width, model.layer_biases[k](y, cond))
                       for k, layer in enumerate(model.layers)]
        self.residuals = [] if model.arch == "pixelcnn" else [(_matrix(m), m.bias) for m in model.residuals]
        self.skip = None  # the skip connections' sum as one matmul over all layers' outputs
        if model.skip:
            self.skip = (torch.cat([_matrix(m) for m in model.skips]), torch.stack([m.bias for m in model.skips]).sum(0))
        self.head = [(_matrix(m), m.bias) for m in model.head]
        self.outputs = {c: [None if layer is None else tuple(t.contiguous() for t in layer) for layer in
                            output_layers(self.skip, self.head, model.channels, model.levels, c)]
                        for c in [None, *range(model.channels)]}  # all logits (None), or channel c's

    def _write(self, x: Tensor, r: int, start: int, stop: int) -> None:
        """Copy pixels (r, start:stop) of x into the scaled, padded input."""
        self.pixels[:, :, r + 3, start + 3 : stop + 3] = scale_pixels(x[:, :, r, start:stop], self.model.levels,
                                                                     self.pixels.dtype)

    def _layer_outputs(self, x: Tensor, r: int, j: int) -> list[Tensor]:
        """Every layer's output (N, F) at pixel (r, j), each layer's caches updated."""
        self._write(x, r, max(j - 1, 0), j + 1)  # this pixel, and the left one's last channel
        window = self.pixels[:, :, r : r + 4, j : j + 7].flatten(1)
        f = torch.addmm(self.input.bias_at(r, j), window, self.input_weight)  # (N, 2h)
        outputs = []
        for k, layer in enumerate(self.layers):
            out = layer.step(f, r, j)
            f = out if self.model.arch == "pixelcnn" else torch.addmm(f + self.residuals[k][1], out,
                                                                      self.residuals[k][0])
            outputs.append(f)
        return outputs

    def logits(self, x: Tensor, r: int, j: int) -> Tensor:
        logits = run_output_layers(self.outputs[None], self._layer_outputs(x, r, j))
        return logits.view(-1, self.model.channels, self.model.levels).transpose(1, 2)  # (N, levels, C)

    def channel_logits(self, x: Tensor, r: int, j: int, c: int) -> Tensor:
        return run_output_layers(self.outputs[c], self._layer_outputs(x, r, j))

    def end_row(self, x: Tensor, r: int) -> None:
        self._write(x, r, x.shape[3] - 1, x.shape[3])  # the row's last pixel's last channel
        type(self.layers[0]).end_rows(self.layers)

    def reorder(self, index: Tensor) -> None:
        self.pixels = self.pixels[index]
        self.input.reorder(index)
        for layer in self.layers:
            layer.reorder(index)
