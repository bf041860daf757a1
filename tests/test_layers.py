"""The fast recurrent layers against cell-by-cell references written from the paper (Sec. 3.1, 3.2).

The references loop over single cells with explicit neighbours: no skewing, no batching of
rows or directions. Outputs and gradients must agree in float64.
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import pixelrnn
from pixelrnn.nn import DiagonalBiLSTM, RowLSTM, channel_groups, group_end, skew, unskew


def cell(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3 for one cell, gates (4h,) as [o, f, i, g]."""
    o, f, i, g = gates.chunk(4)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def reference_diagonal_bilstm(layer: DiagonalBiLSTM, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = x.shape
    h_size = layer.hidden
    w_in = layer.input_to_state.masked_weight()[:, :, 0, 0]
    gates_in = torch.einsum("gf,bfij->bgij", w_in, x) + layer.input_to_state.bias[:, None, None] + bias
    out = []
    for b in range(batch):
        streams = []
        for d, columns in ((0, range(width)), (1, range(width - 1, -1, -1))):  # d=1: right to left
            step = 1 if d == 0 else -1
            h, c = {}, {}
            zero = x.new_zeros(h_size)
            for i in range(height):
                for j in columns:
                    above, left = h.get((i - 1, j), zero), h.get((i, j - step), zero)
                    gates = (gates_in[b, d * 4 * h_size : (d + 1) * 4 * h_size, i, j]
                             + layer.state_to_state[d] @ torch.cat([above, left]) + layer.state_bias[d, :, 0])
                    h[i, j], c[i, j] = cell(gates, c.get((i, j - step), zero))
            streams.append(torch.stack([torch.stack([h[i, j] for j in range(width)], -1) for i in range(height)], -2))
        forward, reverse = streams  # (h, H, W) each; the reverse stream is shifted down one row
        out.append(forward + F.pad(reverse, (0, 0, 1, 0))[:, :-1])
    return torch.stack(out)


def reference_row_lstm(layer: RowLSTM, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = x.shape
    h_size = layer.hidden
    w_in = layer.input_to_state.masked_weight()[:, :, 0]  # (4h, 2h, 3) taps left, centre, right
    w_ss = layer.state_to_state.weight  # (4h, h, 3)
    zero_in, zero_h = x.new_zeros(x.shape[1]), x.new_zeros(h_size)
    out = torch.zeros(batch, h_size, height, width, dtype=x.dtype)
    rows_h = []
    for b in range(batch):
        h, c = {}, {}
        for i in range(height):
            for j in range(width):
                gates = layer.input_to_state.bias + layer.state_to_state.bias + bias[b, :, i, j]
                for tap, dj in enumerate((-1, 0, 1)):
                    inside = 0 <= j + dj < width
                    gates = gates + w_in[:, :, tap] @ (x[b, :, i, j + dj] if inside else zero_in)
                    gates = gates + w_ss[:, :, tap] @ h.get((i - 1, j + dj), zero_h)
                h[i, j], c[i, j] = cell(gates, c.get((i - 1, j), zero_h))
        rows_h.append(torch.stack([torch.stack([h[i, j] for j in range(width)], -1) for i in range(height)], -2))
    out = torch.stack(rows_h)
    return out


@pytest.mark.parametrize("layer_cls,reference", [(DiagonalBiLSTM, reference_diagonal_bilstm),
                                                 (RowLSTM, reference_row_lstm)])
@pytest.mark.parametrize("height,width", [(4, 5), (5, 3), (1, 4)])
def test_fast_layer_equals_cell_by_cell_reference(layer_cls, reference, height, width):
    torch.manual_seed(height * 10 + width)
    layer = layer_cls(6, 4, 3).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.6)
    gate_count = 8 if layer_cls is DiagonalBiLSTM else 4
    x = torch.randn(2, 6, height, width, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, gate_count * 4, height, width, dtype=torch.float64, requires_grad=True)
    fast, slow = layer(x, bias), reference(layer, x, bias)
    torch.testing.assert_close(fast, slow, atol=1e-10, rtol=1e-10)
    weights = torch.randn_like(fast)
    inputs = [x, bias, *layer.parameters()]
    fast_grads = torch.autograd.grad((fast * weights).sum(), inputs)
    slow_grads = torch.autograd.grad((slow * weights).sum(), inputs)
    for name, a, b in zip(["x", "bias", *(n for n, _ in layer.named_parameters())], fast_grads, slow_grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=name)


def test_skew_shifts_row_r_right_by_r_and_unskew_inverts_it():
    x = torch.arange(3 * 4 * 2).view(3, 4, 2)  # (H, W, features)
    skewed = skew(x)
    assert skewed.shape == (3, 6, 2)
    for r, j in itertools.product(range(3), range(6)):
        expected = x[r, j - r] if 0 <= j - r < 4 else torch.zeros(2, dtype=x.dtype)
        assert torch.equal(skewed[r, j], expected)
    assert torch.equal(unskew(skewed), x)


def test_multiscale_log_prob_is_a_normalised_distribution():
    """log p(x) = log p(small) + log p(open pixels | small) sums to 1 over all 2^4 binary 2x2 images;
    the joint of small and full image would count the fixed pixel twice and sum to less."""
    model = pixelrnn.build_model("row_lstm", 1, 2, 2, 2, hidden=4, layers=1, factor=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.8)
    images = torch.tensor(list(itertools.product((0, 1), repeat=4))).view(16, 1, 2, 2)
    total = model.log_prob(images).exp().sum().item()
    assert math.isclose(total, 1.0, rel_tol=1e-6), total  # log_prob sums in float32


def test_group_end_is_one_past_the_last_feature_of_a_colour_group():
    """The samplers compute a draw's logits from the first group_end(...) features (mask B's groups <= c)."""
    for features, channels in itertools.product(range(3, 40), (1, 2, 3)):
        groups = channel_groups(features, channels)
        for group in range(channels):
            assert group_end(features, channels, group) == int((groups <= group).sum()), (features, channels, group)
