"""The stacked stepper (`method="compiled"`): the cached stepper's arithmetic with each kind of state stacked over
the layers, so that a whole per-pixel step, its draw included, is one graph for `torch.compile` (CPU inductor).

A compiled graph's call costs ~40 us plus ~2 us per input tensor on the CPU, and the cached stepper's per-layer
states would be ~75 inputs. Here a step takes the images, the padded input pixels, 2-5 state tensors
(layers, width, N, features), a dozen weights and the pixel's row and column as (1,) tensors, so one graph serves
every pixel. The operations are the cached stepper's; each finished row's update (Row LSTM state-to-state conv,
Diagonal BiLSTM reverse stream, PixelCNN row-above taps) is a second graph, once a row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelrnn.model import Model, PixelRNN, scale_pixels
from pixelrnn.nn import group_end, lstm_cell
from pixelrnn.steppers import CachedStepper, Stepper, draw, output_layers, reverse_stream, run_output_layers

State = list[Tensor]
Weights = dict[str, Tensor]

# inductor options: the C++ wrapper (a graph call without Python per kernel), and no pattern rewrites: they would
# turn `_linear`'s product and bias back into a library addmm, whose first act is to copy the bias into its output
# (measured: 4 CIFAR-10 samples 0.70-0.73 -> 0.59-0.66 s, one thread)
COMPILE_OPTIONS = {"cpp_wrapper": True, "pattern_matcher": False}


def _weights(model: PixelRNN, cache: CachedStepper, n: int) -> Weights:
    """The cached stepper's matrices, stacked over the layers where each layer has one; conditioning maps
    (Multi-Scale, Sec. 3.6) as (H, W, N, F) per pixel ("input_map") and (L, H, W, N, F) ("maps")."""
    layers = cache.layers
    w = {"input": cache.input_weight, "input_bias": cache.input.bias,
         "bias": torch.stack([c.bias.expand(n, -1) for c in layers])}  # (L, N, F)
    (w["head0"], w["head0_bias"]), (w["head1"], w["head1_bias"]) = cache.head
    if cache.skip is not None:
        w["skip"], w["skip_bias"] = cache.skip
    if cache.input.bias_map is not None:
        w["input_map"] = cache.input.bias_map.permute(2, 3, 0, 1).contiguous()
    if layers[0].bias_map is not None:
        w["maps"] = torch.stack([c.bias_map.permute(2, 3, 0, 1) for c in layers])
    if model.arch != "pixelcnn":
        w["residual"] = torch.stack([m for m, _ in cache.residuals])
        w["residual_bias"] = torch.stack([b for _, b in cache.residuals])
    if model.arch == "row_lstm":  # the row above's conv, its bias folded into the layer's
        w["state_to_state"] = torch.stack([layer.state_to_state.weight for layer in model.layers])  # (L, 4h, h, k)
        w["bias"] = w["bias"] + torch.stack([layer.state_to_state.bias for layer in model.layers])[:, None]
    names = {"row_lstm": ("input_to_state",), "diagonal_bilstm": ("weight", "reverse_weight", "reverse_bias"),
             "pixelcnn": ("reduce", "reduce_bias", "expand", "expand_bias", "conv_row", "conv_above")}[model.arch]
    return w | {name: torch.stack([getattr(c, name) for c in layers]) for name in names}


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x @ weight + bias, as a compiled graph runs it fastest: the bias added in the next fused kernel; a one-row
    product (a batch of 1) as a broadcast product and sum, which inductor fuses into loops, rather than a library
    call (measured: 1 binarized-MNIST sample 0.17-0.20 s against 0.35-0.42 s cached, one thread)."""
    if x.shape[0] == 1:
        return (x[:, :, None] * weight).sum(1) + bias
    return torch.mm(x, weight) + bias


def _plus_map(term: Tensor, w: Weights, r: Tensor, j: Tensor, k: int | None = None) -> Tensor:
    """A bias term plus the conditioning map at pixel (r, j) (layer k's, or the input conv's), if there is one."""
    key = "input_map" if k is None else "maps"
    if key not in w:
        return term
    return term + (w[key] if k is None else w[key][k])[r, j][0]


def _input_features(x: Tensor, pixels: Tensor, r: Tensor, j: Tensor, w: Weights, levels: int) -> Tensor:
    """The input conv's features (N, 2h) at pixel (r, j); writes the pixel and its left neighbour (whose last
    channel is now final) into the scaled, padded input pixels (N, C, H + 3, W + 6)."""
    written = (j + torch.arange(2, device=x.device) - 1).clamp(min=0)
    pixels[:, :, r + 3, written + 3] = scale_pixels(x[:, :, r, written], levels, pixels.dtype)
    rows, cols = r + torch.arange(4, device=x.device), j + torch.arange(7, device=x.device)
    window = pixels[:, :, rows[:, None], cols[None, :]].flatten(1)  # kernel rows r-3..r
    return _linear(window, w["input"], _plus_map(w["input_bias"], w, r, j))


def _final(c: int | None, channels: int) -> bool:
    """Whether a pass computes the pixel's final states: a known pixel's (c None), or its last channel's."""
    return c is None or c == channels - 1


def _write(states: State, columns: list[Tensor], layers: list[tuple[Tensor, ...]]) -> None:
    """Each state's column (a (1,) tensor) <- its values (N, F), from one tuple per layer holding a value for each
    state; once a pass and for all layers at once: one in-place write of the state, where a write per layer made
    inductor rebuild the whole state each time (measured: 4 CIFAR-10 samples 0.93 -> 0.72 s)."""
    for state, column, values in zip(states, columns, zip(*layers)):
        state[:, column] = torch.stack(values)[:, None]


def _head(outputs: list[Tensor], channels: int, levels: int, w: Weights, c: int | None) -> Tensor:
    """Skip connections' sum, then the two 1x1 output convs -> logits (N, levels, C), or channel c's (N, levels)
    from the part of the head that they see (`steppers.output_layers`)."""
    skip = (w["skip"], w["skip_bias"]) if "skip" in w else None
    head = [(w["head0"], w["head0_bias"]), (w["head1"], w["head1_bias"])]
    logits = run_output_layers(output_layers(skip, head, channels, levels, c), outputs, _linear)
    return logits if c is not None else logits.view(-1, channels, levels).transpose(1, 2)


def _row_lstm(x: Tensor, pixels: Tensor, states: State, r: Tensor, j: Tensor, w: Weights, levels: int,
              c: int | None = None) -> Tensor:
    """Row LSTM (Sec. 3.1). states: inputs (L, W + 1, N, 2h) after a zero column; c_above, c_row, h_row
    (L, W, N, h); row_gates (L, W, N, 4h): the row above's state-to-state gates plus the bias."""
    inputs, c_above, c_row, h_row, row_gates = states
    f, outputs, new = _input_features(x, pixels, r, j, w, levels), [], []
    for k in range(inputs.shape[0]):
        gates = _linear(torch.cat([inputs[k, j][0], f], 1), w["input_to_state"][k],
                        _plus_map(row_gates[k, j][0], w, r, j, k))  # the layer's inputs at the left pixel and this one
        h, cell = lstm_cell(gates, c_above[k, j][0])
        new.append((f, cell, h))
        f = _linear(h, w["residual"][k], f + w["residual_bias"][k])
        outputs.append(f)
    if _final(c, x.shape[1]):
        _write([inputs, c_row, h_row], [j + 1, j, j], new)
    return _head(outputs, x.shape[1], levels, w, c)


def _diagonal_bilstm(x: Tensor, pixels: Tensor, states: State, r: Tensor, j: Tensor, w: Weights, levels: int,
                     c: int | None = None) -> Tensor:
    """Diagonal BiLSTM (Sec. 3.2). states: h_above, h_row, c_row (L, W + 1, N, h) after a zero column; reverse
    (L, W, N, h) the row above's reverse stream; reverse_in (L, W, N, 4h) this row's input to it."""
    h_above, h_row, c_row, reverse, reverse_in = states
    f, outputs, hidden = _input_features(x, pixels, r, j, w, levels), [], h_row.shape[3]
    new = []
    for k in range(h_row.shape[0]):
        above_left = torch.cat([f, h_above[k, j + 1][0], h_row[k, j][0]], 1)
        gates = _linear(above_left, w["weight"][k], _plus_map(w["bias"][k], w, r, j, k))
        h, cell = lstm_cell(gates[:, : 4 * hidden], c_row[k, j][0])
        new.append((gates[:, 4 * hidden :], cell, h))
        f = _linear(h + reverse[k, j][0], w["residual"][k], f + w["residual_bias"][k])
        outputs.append(f)
    if _final(c, x.shape[1]):
        _write([reverse_in, c_row, h_row], [j, j + 1, j + 1], new)
    return _head(outputs, x.shape[1], levels, w, c)


def _pixelcnn(x: Tensor, pixels: Tensor, states: State, r: Tensor, j: Tensor, w: Weights, levels: int,
              c: int | None = None) -> Tensor:
    """PixelCNN blocks (Sec. 3.4). states: reduced (L, W + 1, N, h) this row's relu(reduce(relu(f))) after a zero
    column; above (L, W, N, h) the 3x3 conv's row-above taps plus its bias.

    Channel c's logits see only the colour groups <= c of this pixel's features (mask B; the left pixel's and the
    row above's are whole), so a pass before the last computes those alone: a ninth of the blocks' work for R, four
    ninths for G. The last pass computes every group and leaves the pixel's final features in the cache."""
    reduced, above = states
    channels, hidden = x.shape[1], reduced.shape[3]
    f, outputs = _input_features(x, pixels, r, j, w, levels), []
    groups = hidden  # this pixel's features computed: all, or in a pass before the last those of groups <= c
    if not _final(c, channels):
        f, groups = f[:, : group_end(2 * hidden, channels, c)], group_end(hidden, channels, c)
    new = []
    for k in range(reduced.shape[0]):
        t = _linear(f.relu(), w["reduce"][k, : f.shape[1], :groups], w["reduce_bias"][k, :groups]).relu_()
        new.append((t,))  # (N, groups)
        conv_row = w["conv_row"][k]  # (2h, h): rows for the left pixel's h features, then for this pixel's
        if groups < hidden:
            conv_row = torch.cat([conv_row[:hidden, :groups], conv_row[hidden : hidden + groups, :groups]])
        u = _linear(torch.cat([reduced[k, j][0], t], 1), conv_row,
                    _plus_map(above[k, j][0], w, r, j, k)[:, :groups]).relu_()
        f = _linear(u, w["expand"][k, :groups, : f.shape[1]], f + w["expand_bias"][k, : f.shape[1]])
        outputs.append(f)
    if _final(c, channels):
        _write([reduced], [j + 1], new)
    return _head(outputs, channels, levels, w, c)


LOGITS = {"row_lstm": _row_lstm, "diagonal_bilstm": _diagonal_bilstm, "pixelcnn": _pixelcnn}


def _row_conv(row: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Every layer's 1D conv along a finished row, as one grouped conv: row (L, W, N, F_in), weight
    (L, F_out, F_in, k), bias (L, N, F_out) -> (L, W, N, F_out)."""
    layers, width, n, _ = row.shape
    out = F.conv1d(row.permute(2, 0, 3, 1).flatten(1, 2), weight.flatten(0, 1), padding=weight.shape[3] // 2,
                   groups=layers)  # (N, L * F_out, W)
    return (out.view(n, layers, -1, width).permute(1, 3, 0, 2) + bias[:, None]).contiguous()


def _row_lstm_end(states: State, w: Weights) -> State:
    """Row LSTM, a row finished: its cells become the row above's, its states' conv the next row's gates."""
    inputs, _, c_row, h_row, _ = states
    return [inputs, c_row, torch.zeros_like(c_row), torch.zeros_like(h_row),
            _row_conv(h_row, w["state_to_state"], w["bias"])]


def _diagonal_bilstm_end(states: State, w: Weights) -> State:
    """Diagonal BiLSTM, a row finished: every layer's reverse stream over it, right to left (Sec. 3.2)."""
    _, h_row, c_row, reverse, reverse_in = states
    reverse = reverse_stream(reverse, reverse_in, w["reverse_bias"], w["reverse_weight"])
    return [h_row, torch.zeros_like(h_row), torch.zeros_like(c_row), reverse, torch.zeros_like(reverse_in)]


def _pixelcnn_end(states: State, w: Weights) -> State:
    """PixelCNN, a row finished: the 3x3 convs' row-above taps over it, plus their bias, for the next row."""
    reduced, _ = states
    return [torch.zeros_like(reduced), _row_conv(reduced[:, 1:], w["conv_above"], w["bias"])]


END_ROW = {"row_lstm": _row_lstm_end, "diagonal_bilstm": _diagonal_bilstm_end, "pixelcnn": _pixelcnn_end}


def drawing(arch: str) -> Callable:
    """The architecture's step that draws pixel (r, j) into x (each sub-pixel by `steppers.draw`, R, then G given R,
    then B given R and G) in one graph -> each sub-pixel's distribution (N, levels)."""
    logits_fn = LOGITS[arch]

    def step(x: Tensor, pixels: Tensor, states: State, r: Tensor, j: Tensor, w: Weights, levels: int, u: Tensor,
             temperature: Tensor) -> list[Tensor]:
        distributions = []
        for c in range(x.shape[1]):
            level, probs = draw(logits_fn(x, pixels, states, r, j, w, levels, c), u[c], temperature)
            x[:, c, r, j] = level
            distributions.append(probs)
        return distributions

    return step


_COMPILED: dict[tuple[str, str], Callable] = {}


def compilable(model: Model) -> bool:
    """Where the compiled step is known to pay: a PixelRNN on the CPU (measured on the shipped ones, one thread:
    2-2.6x; a Multi-Scale model's stages, with their conditioning maps, were not measured)."""
    return isinstance(model, PixelRNN) and next(model.parameters()).device.type == "cpu"


def eager(kind: str, arch: str) -> Callable:
    """The architecture's drawing step (kind "step") or end of row ("end_row"), as written."""
    return drawing(arch) if kind == "step" else END_ROW[arch]


def compiled(kind: str, arch: str) -> Callable:
    """`eager(kind, arch)` under `torch.compile`, one per process: compiled at its first call for each model shape
    and batch size (static shapes: a dynamic batch's graph was slower), 20-40 s cold, seconds from inductor's disk
    cache. The architectures' steps share one code object, whose compiled graphs dynamo caps at `recompile_limit`
    (8 by default): raised to 64 here, so that a few models at a few batch sizes stay compiled."""
    if (kind, arch) not in _COMPILED:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        _COMPILED[kind, arch] = torch.compile(eager(kind, arch), fullgraph=True, dynamic=False,
                                              options=COMPILE_OPTIONS)
    return _COMPILED[kind, arch]


class StackedStepper(Stepper):
    """The cached stepper with stacked states: `draw` runs one compiled graph per pixel, `end_row` one per row
    (`compile=False`: the same functions eagerly, for tests); `logits` (a known pixel's, in a completion) runs
    eagerly."""

    def __init__(self, model: PixelRNN, x: Tensor, y: Tensor | None, cond: Tensor | None, compile: bool = True):
        n, _, height, width = x.shape
        cache = CachedStepper(model, x, y, cond)
        self.model, self.pixels, self.w = model, cache.pixels, _weights(model, cache, n)
        self.states = self._fresh_states(n)
        self.rows = [torch.tensor([r], device=x.device) for r in range(height)]
        self.cols = [torch.tensor([j], device=x.device) for j in range(width)]
        self.logits_fn = LOGITS[model.arch]
        functions = compiled if compile else eager
        self.step, self.end_row_fn = functions("step", model.arch), functions("end_row", model.arch)

    def _fresh_states(self, n: int) -> State:
        """The states before row 0, in the order the architecture's step takes them."""
        layers, width, bias = len(self.model.layers), self.model.width, self.w["bias"]
        zeros = bias.new_zeros
        if self.model.arch == "pixelcnn":
            return [zeros(layers, width + 1, n, self.w["reduce"].shape[2]),
                    bias[:, None].expand(-1, width, -1, -1).clone()]  # nothing above row 0: the bias alone
        hidden = self.model.layers[0].hidden
        if self.model.arch == "row_lstm":
            c_row = zeros(layers, width, n, hidden)
            return [zeros(layers, width + 1, n, 2 * hidden), c_row.clone(), c_row, c_row.clone(),
                    _row_conv(c_row, self.w["state_to_state"], self.w["bias"])]
        h_row = zeros(layers, width + 1, n, hidden)
        return [h_row.clone(), h_row, h_row.clone(), zeros(layers, width, n, hidden),
                zeros(layers, width, n, 4 * hidden)]

    def logits(self, x: Tensor, r: int, j: int) -> Tensor:
        return self.logits_fn(x, self.pixels, self.states, self.rows[r], self.cols[j], self.w, self.model.levels)

    def channel_logits(self, x: Tensor, r: int, j: int, c: int) -> Tensor:
        return self.logits_fn(x, self.pixels, self.states, self.rows[r], self.cols[j], self.w, self.model.levels, c)

    def draw(self, x: Tensor, r: int, j: int, u: Tensor, temperature: Tensor) -> list[Tensor]:
        try:
            return self.step(x, self.pixels, self.states, self.rows[r], self.cols[j], self.w, self.model.levels, u,
                             temperature.view(-1, 1))
        except torch._dynamo.exc.BackendCompilerFailed as error:
            inner = getattr(error, "inner_exception", error)
            cause = " ".join([type(inner).__name__ + ":", *str(inner).strip().splitlines()[:1]])[:200]
            raise RuntimeError(f"torch.compile failed ({cause}); on the CPU it needs a C++ compiler; sample with "
                               "method='cached'") from error

    def end_row(self, x: Tensor, r: int) -> None:
        width = x.shape[3]
        self.pixels[:, :, r + 3, width + 2] = scale_pixels(x[:, :, r, width - 1], self.model.levels,
                                                           self.pixels.dtype)  # the row's last pixel, final
        self.states = self.end_row_fn(self.states, self.w)

    def reorder(self, index: Tensor) -> None:
        """SMC resampling: every state follows its particle (the batch is dim 2 of a state, 0 of the pixels)."""
        self.pixels = self.pixels[index]
        self.states = [s.index_select(2, index) for s in self.states]
        batch_dim = {"bias": 1, "input_map": 2, "maps": 3}
        for name, value in self.w.items():
            if name in batch_dim:
                self.w[name] = value.index_select(batch_dim[name], index)
        if self.w["input_bias"].shape[0] > 1:  # per image (class-conditional)
            self.w["input_bias"] = self.w["input_bias"][index]
