"""Probe for issue 20's sampler target, not part of the test suite:
`python scripts/compile_probe.py [--model NAME] [--decompose]`.

A shipped model's per-pixel step written with its states stacked over the layers (a few state tensors and a dozen
weights: a compiled graph's call costs ~40 us plus ~2 us per input tensor, and the cached stepper's per-layer states
would be ~75 inputs), compiled once with `torch.compile` (CPU inductor, C++ wrapper) for every pixel (the pixel's
row and column are tensors), with the library's draw in the same graph. Draws samples with the library's uniforms
(1 for MNIST, 4 of class 0 for CIFAR-10), checks they equal `pixelrnn.sample`'s, and prints the time against the library's, best of 3, one thread.
Every architecture (1-channel or RGB, class-conditional); --decompose: small matmuls become fused loops instead of library calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch._inductor.config as inductor
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pixelrnn
from pixelrnn.checkpoints import load_folder
from pixelrnn.model import scale_pixels
from pixelrnn.nn import lstm_cell
from pixelrnn.sampling import tempered_probs
from pixelrnn.steppers import CachedStepper

MODELS = {"binarized-mnist-row-lstm": (1, None), "binarized-mnist-diagonal-bilstm": (1, None),
          "binarized-mnist-pixelcnn": (1, None),
          "cifar10-pixelcnn-conditional": (4, 0)}  # name -> (samples, class)


def weights(model: pixelrnn.PixelRNN, cache: CachedStepper) -> dict[str, torch.Tensor]:
    """The cached stepper's matrices, stacked over the layers where a layer has one each."""
    (head0, head0_bias), (head1, head1_bias) = cache.head
    w = {"input": cache.input_weight, "input_bias": cache.input.bias, "skip": cache.skip_weight,
         "skip_bias": cache.skip_bias, "head0": head0, "head0_bias": head0_bias, "head1": head1, "head1_bias": head1_bias,
         "bias": torch.stack([c.bias.expand(cache.pixels.shape[0], -1) for c in cache.layers])}  # (L, N, F)
    if model.arch != "pixelcnn":
        w |= {"residual": torch.stack([m for m, _ in cache.residuals]),
              "residual_bias": torch.stack([b for _, b in cache.residuals])}
    if model.arch == "row_lstm":
        w["gates"] = torch.stack([c.input_to_state for c in cache.layers])  # (L, 4h, 4h): [left | centre] inputs
    elif model.arch == "diagonal_bilstm":
        w |= {name: torch.stack([getattr(c, name) for c in cache.layers])
              for name in ("weight", "reverse_weight", "reverse_bias")}
    else:
        w |= {name: torch.stack([getattr(c, name) for c in cache.layers])
              for name in ("reduce", "reduce_bias", "expand", "expand_bias", "conv_row", "conv_above")}
    return w


def input_features(x, pixels, r, j, w, levels: int):
    """The input conv's features (N, 2h) at pixel (r, j) (tensors of shape (1,)); writes the pixel and its left
    neighbour's final value into the scaled, padded input pixels (N, C, H + 3, W + 6)."""
    written = (j + torch.arange(2) - 1).clamp(min=0)
    pixels[:, :, r + 3, written + 3] = scale_pixels(x[:, :, r, written], levels)
    window = pixels[:, :, (r + torch.arange(4))[:, None], (j + torch.arange(7))[None, :]].flatten(1)
    return torch.addmm(w["input_bias"], window, w["input"])


def head(outputs: list, channels: int, levels: int, w):
    out = torch.addmm(w["skip_bias"], torch.cat(outputs, 1), w["skip"])
    logits = torch.addmm(w["head1_bias"], torch.addmm(w["head0_bias"], out.relu(), w["head0"]).relu_(), w["head1"])
    return logits.view(-1, channels, levels).transpose(1, 2)  # (N, levels, C)


def row_lstm_logits(x, pixels, states, r, j, w, levels: int):
    """states: inputs (L, W + 1, N, 2h) after a zero column; c_above, c_row, h_row (L, W, N, h); row_gates
    (L, W, N, 4h) from the row above."""
    inputs, c_above, c_row, h_row, row_gates = states
    f, outputs = input_features(x, pixels, r, j, w, levels), []
    for k in range(inputs.shape[0]):
        inputs[k, j + 1] = f[None]
        left, centre = inputs[k, torch.cat([j, j + 1])]
        gates = torch.addmm(row_gates[k, j][0], torch.cat([left, centre], 1), w["gates"][k])
        h, c = lstm_cell(gates, c_above[k, j][0])
        c_row[k, j], h_row[k, j] = c[None], h[None]
        f = torch.addmm(f + w["residual_bias"][k], h, w["residual"][k])
        outputs.append(f)
    return head(outputs, x.shape[1], levels, w)


def diagonal_bilstm_logits(x, pixels, states, r, j, w, levels: int):
    """states: h_above, h_row, c_row (L, W + 1, N, h) after a zero column; reverse (L, W, N, h) the row above's
    reverse stream; reverse_in (L, W, N, 4h) this row's input to it."""
    h_above, h_row, c_row, reverse, reverse_in = states
    f, outputs, hidden = input_features(x, pixels, r, j, w, levels), [], h_row.shape[3]
    for k in range(h_row.shape[0]):
        above_left = torch.cat([f, h_above[k, j + 1][0], h_row[k, j][0]], 1)
        gates = torch.addmm(w["bias"][k], above_left, w["weight"][k])
        reverse_in[k, j] = gates[None, :, 4 * hidden :]
        h, c = lstm_cell(gates[:, : 4 * hidden], c_row[k, j][0])
        c_row[k, j + 1], h_row[k, j + 1] = c[None], h[None]
        f = torch.addmm(f + w["residual_bias"][k], h + reverse[k, j][0], w["residual"][k])
        outputs.append(f)
    return head(outputs, x.shape[1], levels, w)


def pixelcnn_logits(x, pixels, states, r, j, w, levels: int):
    """states: reduced (L, W + 1, N, h) this row's relu(reduce(relu(f))) after a zero column; above (L, W, N, h)
    the 3x3 conv's row-above taps plus its bias."""
    reduced, above = states
    f, outputs = input_features(x, pixels, r, j, w, levels), []
    for k in range(reduced.shape[0]):
        t = torch.addmm(w["reduce_bias"][k], f.relu(), w["reduce"][k]).relu_()
        reduced[k, j + 1] = t[None]
        u = torch.addmm(above[k, j][0], torch.cat([reduced[k, j][0], t], 1), w["conv_row"][k]).relu_()
        f = torch.addmm(f + w["expand_bias"][k], u, w["expand"][k])
        outputs.append(f)
    return head(outputs, x.shape[1], levels, w)


def fresh_states(model: pixelrnn.PixelRNN, n: int, w) -> list[torch.Tensor]:
    """The states before row 0, in the order the architecture's step takes them."""
    layers, width = len(model.layers), model.width
    if model.arch == "row_lstm":
        hidden = model.layers[0].hidden
        c_row = torch.zeros(layers, width, n, hidden)
        return [torch.zeros(layers, width + 1, n, 2 * hidden), c_row.clone(), c_row, c_row.clone(),
                row_gates_of(model, c_row, w)]
    if model.arch == "diagonal_bilstm":
        hidden = model.layers[0].hidden
        h_row = torch.zeros(layers, width + 1, n, hidden)
        return [h_row.clone(), h_row, h_row.clone(), torch.zeros(layers, width, n, hidden),
                torch.zeros(layers, width, n, 4 * hidden)]
    features = w["reduce"].shape[2]
    return [torch.zeros(layers, width + 1, n, features), w["bias"][:, None].expand(-1, width, -1, -1).clone()]


def row_gates_of(model: pixelrnn.PixelRNN, h_row: torch.Tensor, w) -> torch.Tensor:
    """Row LSTM: state-to-state gates of a finished row h_row (L, W, N, h) plus the constant bias (L, W, N, 4h)."""
    above = h_row.permute(0, 2, 3, 1)  # (L, N, h, W)
    return torch.stack([(layer.state_to_state(above[k]) + w["bias"][k][:, :, None]).permute(2, 0, 1)
                        for k, layer in enumerate(model.layers)])


def end_row(model: pixelrnn.PixelRNN, states: list[torch.Tensor], w) -> list[torch.Tensor]:
    """The states for the next row, once this one is finished (eager: once a row)."""
    if model.arch == "row_lstm":
        inputs, _, c_row, h_row, _ = states
        return [inputs, c_row, torch.zeros_like(c_row), torch.zeros_like(h_row), row_gates_of(model, h_row, w)]
    if model.arch == "diagonal_bilstm":
        return diagonal_end_row(states, w)
    reduced, _ = states
    row = reduced[:, 1:].permute(0, 2, 3, 1)  # (L, N, h, W)
    above = torch.stack([F.conv1d(row[k], w["conv_above"][k], padding=1) + w["bias"][k][:, :, None]
                         for k in range(len(row))]).permute(0, 3, 1, 2)
    return [torch.zeros_like(reduced), above]


def diagonal_end_row(states: list[torch.Tensor], w) -> list[torch.Tensor]:
    """Diagonal BiLSTM: every layer's reverse stream right to left over the finished row (as the cached stepper)."""
    _, h_row, c_row, reverse, reverse_in = states
    layers, width, n, hidden = reverse.shape
    reverse_in = reverse_in + w["reverse_bias"][:, None, None]
    reverse = reverse.clone()  # row r-1's states, overwritten by row r's
    h_right = c_right = torch.zeros(layers * n, hidden)
    for j in reversed(range(width)):
        above_right = torch.cat([reverse[:, j], h_right.view(layers, n, hidden)], dim=2)
        gates = torch.baddbmm(reverse_in[:, j], above_right, w["reverse_weight"])
        h_right, c_right = lstm_cell(gates.view(layers * n, 4 * hidden), c_right)
        reverse[:, j] = h_right.view(layers, n, hidden)
    return [h_row, torch.zeros_like(h_row), torch.zeros_like(c_row), reverse, torch.zeros_like(reverse_in)]


def drawing(logits_fn: Callable) -> Callable:
    """The step with the library's draw of sub-pixel c (tempered_probs at temperature 1, cumsum, searchsorted given
    the uniform u (N, 1)) written into x, in the same graph (one per channel)."""
    def step(x, pixels, states, r, j, c: int, u, w, levels: int) -> None:
        probs = tempered_probs(logits_fn(x, pixels, states, r, j, w, levels)[:, :, c], 1.0)
        cdf = probs.cumsum(1)
        x[:, c, r, j] = torch.searchsorted(cdf, u * cdf[:, -1:])

    return step


def sample(model: pixelrnn.PixelRNN, step: Callable, n: int, y: int | None, seed: int) -> torch.Tensor:
    """n samples, drawn as `pixelrnn.sample` draws them (its uniforms, tempered_probs, searchsorted)."""
    channels, height, width, levels = model.channels, model.height, model.width, model.levels
    uniforms = torch.rand(height, width, channels, n, generator=torch.Generator().manual_seed(seed))
    x = torch.zeros(n, channels, height, width, dtype=torch.long)
    cache = CachedStepper(model, x, None if y is None else torch.full((n,), y), None)
    w = weights(model, cache)
    pixels, states = torch.zeros(n, channels, height + 3, width + 6), fresh_states(model, n, w)
    rows, cols = [torch.tensor([r]) for r in range(height)], [torch.tensor([j]) for j in range(width)]
    for r in range(height):
        for j in range(width):
            for c in range(channels):
                step(x, pixels, states, rows[r], cols[j], c, uniforms[r, j, c, :, None], w, levels)
        pixels[:, :, r + 3, width + 2] = scale_pixels(x[:, :, r, width - 1], levels)  # the row's last pixel, final
        states = end_row(model, states, w)
    return x


def best_of(runs: int, fn: Callable) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), default="binarized-mnist-row-lstm")
    parser.add_argument("--decompose", action="store_true", help="small matmuls as fused loops")
    args = parser.parse_args()
    torch.set_num_threads(1)
    inductor.cpp_wrapper = True
    if args.decompose:
        inductor.post_grad_fusion_options = {"decompose_mm_pass": {"cpu_max_first_dimension_decomposition": 16,
                                                                   "cpu_max_other_dimension_decomposition": 4096}}
    model = load_folder(REPO / "checkpoints" / args.model).eval()
    n, y = MODELS[args.model]
    compiled = torch.compile(drawing({"row_lstm": row_lstm_logits, "diagonal_bilstm": diagonal_bilstm_logits,
                                      "pixelcnn": pixelcnn_logits}[model.arch]))
    with torch.inference_mode():
        compile_s, _ = best_of(1, lambda: sample(model, compiled, n, y, 0))
        fast_s, fast = best_of(3, lambda: sample(model, compiled, n, y, 0))
        library_s, library = best_of(3, lambda: pixelrnn.sample(model, n, y=y, seed=0))
    print(f"{args.model}, {n} sample(s), 1 thread: compiled stacked step {fast_s:.3f} s (first run with "
          f"compilation {compile_s:.1f} s), pixelrnn.sample {library_s:.3f} s, {library_s / fast_s:.2f}x; "
          f"same samples: {torch.equal(fast, library)}")


if __name__ == "__main__":
    main()
