"""Probe for issue 20's sampler target, not part of the test suite: `python scripts/compile_probe.py [--decompose]`.

The shipped binarized-MNIST Row LSTM's per-pixel step written with its states stacked over the layers (five state
tensors, a dozen weight tensors: a compiled graph's call costs ~40 us plus ~2 us per input tensor, and the cached
stepper's per-layer states would be ~75 inputs), compiled once with `torch.compile` (CPU inductor, C++ wrapper)
for every pixel (the pixel's row and column are tensors). Draws 1 sample with the library's uniforms and draw,
checks it equals `pixelrnn.sample(model, 1, seed=0)`, and prints its time against the library's, best of 3, one
thread. --decompose: small matmuls become fused loops instead of library calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch._inductor.config as inductor

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pixelrnn
from pixelrnn.checkpoints import load_folder
from pixelrnn.model import scale_pixels
from pixelrnn.nn import lstm_cell
from pixelrnn.sampling import tempered_probs
from pixelrnn.steppers import CachedStepper


def weights(model: pixelrnn.PixelRNN) -> dict[str, torch.Tensor]:
    """The cached stepper's matrices, stacked over the layers where a layer has one each."""
    cache = CachedStepper(model, torch.zeros(1, 1, model.height, model.width, dtype=torch.long), None, None)
    (head0, head0_bias), (head1, head1_bias) = cache.head
    return {"input": cache.input_weight, "input_bias": cache.input.bias[0],
            "gates": torch.stack([c.input_to_state for c in cache.layers]),  # (L, 4h, 4h): [left | centre] inputs
            "gates_bias": torch.stack([c.bias[0] for c in cache.layers]),  # (L, 4h)
            "residual": torch.stack([w for w, _ in cache.residuals]), "residual_bias": torch.stack([b for _, b in cache.residuals]),
            "skip": cache.skip_weight, "skip_bias": cache.skip_bias,
            "head0": head0, "head0_bias": head0_bias, "head1": head1, "head1_bias": head1_bias}


def pixel_logits(x, pixels, inputs, c_above, c_row, h_row, row_gates, r, j, w: dict[str, torch.Tensor]):
    """Logits (N, levels) of pixel (r, j) (tensors of shape (1,)) of a 1-channel, 2-level image; writes the
    pixel's states. pixels (N, 1, H + 3, W + 6) scaled, padded input; inputs (L, W + 1, N, 2h) layer inputs after
    a zero column; c_above, c_row, h_row (L, W, N, h); row_gates (L, W, N, 4h) from the row above."""
    written = (j + torch.arange(2) - 1).clamp(min=0)  # the left neighbour's final value and this pixel
    pixels[:, :, r + 3, written + 3] = scale_pixels(x[:, :, r, written], 2)
    window = pixels[:, :, (r + torch.arange(4))[:, None], (j + torch.arange(7))[None, :]].flatten(1)
    f = torch.addmm(w["input_bias"], window, w["input"])
    outputs = []
    for k in range(inputs.shape[0]):
        inputs[k, j + 1] = f[None]
        left, centre = inputs[k, torch.cat([j, j + 1])]
        gates = torch.addmm(row_gates[k, j][0], torch.cat([left, centre], 1), w["gates"][k])
        h, c = lstm_cell(gates, c_above[k, j][0])
        c_row[k, j], h_row[k, j] = c[None], h[None]
        f = torch.addmm(f + w["residual_bias"][k], h, w["residual"][k])
        outputs.append(f)
    out = torch.addmm(w["skip_bias"], torch.cat(outputs, 1), w["skip"])
    return torch.addmm(w["head1_bias"], torch.addmm(w["head0_bias"], out.relu(), w["head0"]).relu_(), w["head1"])


def row_gates_of(model: pixelrnn.PixelRNN, h_row: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """State-to-state gates of a finished row h_row (L, W, N, h) plus the constant bias -> (L, W, N, 4h)."""
    above = h_row.permute(0, 2, 3, 1)  # (L, N, h, W)
    return torch.stack([(layer.state_to_state(above[k]) + w["gates_bias"][k][None, :, None]).permute(2, 0, 1)
                        for k, layer in enumerate(model.layers)])


def sample(model: pixelrnn.PixelRNN, step, w: dict[str, torch.Tensor], seed: int) -> torch.Tensor:
    """One sample, drawn as `pixelrnn.sample` draws it (its uniforms, tempered_probs, searchsorted)."""
    height, width, layers, hidden = model.height, model.width, len(model.layers), model.layers[0].hidden
    uniforms = torch.rand(height, width, 1, 1, generator=torch.Generator().manual_seed(seed))
    x = torch.zeros(1, 1, height, width, dtype=torch.long)
    pixels = torch.zeros(1, 1, height + 3, width + 6)
    inputs = torch.zeros(layers, width + 1, 1, 2 * hidden)
    c_above, c_row, h_row = (torch.zeros(layers, width, 1, hidden) for _ in range(3))
    row_gates = row_gates_of(model, h_row, w)  # above row 0: zeros
    rows, cols = [torch.tensor([r]) for r in range(height)], [torch.tensor([j]) for j in range(width)]
    for r in range(height):
        for j in range(width):
            probs = tempered_probs(step(x, pixels, inputs, c_above, c_row, h_row, row_gates, rows[r], cols[j], w), 1.0)
            cdf = probs.cumsum(1)
            x[:, 0, r, j] = torch.searchsorted(cdf, uniforms[r, j, 0, :, None] * cdf[:, -1:])[:, 0]
        pixels[:, :, r + 3, width + 2] = scale_pixels(x[:, :, r, width - 1], 2)  # the row's last pixel, final
        row_gates = row_gates_of(model, h_row, w)
        c_above, c_row, h_row = c_row, torch.zeros_like(c_row), torch.zeros_like(h_row)
    return x


def best_of(runs: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decompose", action="store_true", help="small matmuls as fused loops")
    args = parser.parse_args()
    torch.set_num_threads(1)
    inductor.cpp_wrapper = True
    if args.decompose:
        inductor.post_grad_fusion_options = {"decompose_mm_pass": {"cpu_max_first_dimension_decomposition": 16,
                                                                   "cpu_max_other_dimension_decomposition": 4096}}
    model = load_folder(REPO / "checkpoints" / "binarized-mnist-row-lstm").eval()
    compiled = torch.compile(pixel_logits)
    with torch.inference_mode():
        w = weights(model)
        compile_s, _ = best_of(1, lambda: sample(model, compiled, w, 0))
        fast_s, fast = best_of(3, lambda: sample(model, compiled, w, 0))
        library_s, library = best_of(3, lambda: pixelrnn.sample(model, 1, seed=0))
    print(f"binarized-mnist-row-lstm, 1 sample, 1 thread: compiled stacked step {fast_s:.3f} s (first run with "
          f"compilation {compile_s:.1f} s), pixelrnn.sample {library_s:.3f} s, {library_s / fast_s:.2f}x; "
          f"same sample: {torch.equal(fast, library)}")


if __name__ == "__main__":
    main()
