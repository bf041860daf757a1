"""PixelRNN layers: masks, masked convolutions, Row LSTM, Diagonal BiLSTM, PixelCNN block.

Every paper concept lives here once; section numbers refer to van den Oord et al.,
"Pixel Recurrent Neural Networks", ICML 2016 (arXiv 1601.06759).
Feature maps are (B, F, H, W); F features are split into C contiguous groups (R, G, B).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def channel_groups(features: int, channels: int) -> Tensor:
    """Colour group (0..C-1) of each of `features` feature maps (Sec. 3.4).

    Features are split into C contiguous groups; sizes differ by at most one, so any
    feature count >= C works.
    """
    if features < channels:
        raise ValueError(f"need at least {channels} features for {channels} channels, got {features}")
    return torch.arange(features) * channels // features


def group_end(features: int, channels: int, group: int) -> int:
    """One past the last feature of colour group `group` in `channel_groups` (its features and every earlier
    group's are the first this many)."""
    return -(-(group + 1) * features // channels)


def causal_mask(out_groups: Tensor, in_groups: Tensor, kernel: tuple[int, int], mask_type: str) -> Tensor:
    """Mask A / mask B of Sec. 3.4 for a (kh, kw) kernel with odd sizes -> (O, I, kh, kw).

    Spatially a position sees rows above and pixels to its left. At the centre, output
    group o sees input group i when i < o (mask A: a sub-pixel never sees itself) or
    i <= o (mask B: later layers may see their own group).
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel
    cy, cx = kh // 2, kw // 2
    mask = torch.ones(len(out_groups), len(in_groups), kh, kw)
    mask[:, :, cy, cx + 1 :] = 0
    mask[:, :, cy + 1 :, :] = 0
    if mask_type == "A":
        centre = in_groups[None, :] < out_groups[:, None]
    else:
        centre = in_groups[None, :] <= out_groups[:, None]
    mask[:, :, cy, cx] = centre.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """Convolution whose weight is multiplied by a causal mask (Sec. 3.4), 'same' padding."""

    def __init__(self, in_groups: Tensor, out_groups: Tensor, kernel: tuple[int, int], mask_type: str):
        super().__init__(len(in_groups), len(out_groups), kernel, padding=(kernel[0] // 2, kernel[1] // 2))
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask(out_groups, in_groups, kernel, mask_type), persistent=False)

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)


def lstm_cell(gates: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
    """Gates [o, f, i, g] stacked on dim 1 -> (h, c): c = f*c_prev + i*g, h = o*tanh(c) (Eq. 3)."""
    o, f, i, g = gates.unflatten(1, (4, -1)).unbind(1)  # unbind: one gradient copy, not one per gate
    cell = torch.addcmul(torch.sigmoid(f) * cell, torch.sigmoid(i), torch.tanh(g))
    return torch.sigmoid(o) * torch.tanh(cell), cell


def cell_dtype(gates: Tensor) -> torch.dtype:
    """LSTM cell states stay in float32 (or float64) when the gates are bf16 under autocast."""
    return torch.promote_types(gates.dtype, torch.float32)


class RowLSTM(nn.Module):
    """Row LSTM (Sec. 3.1): processes the map row by row, top to bottom.

    Input-to-state: a 1 x k (k=3) mask-B convolution along the row, computed for the
    whole map at once. State-to-state: a 1 x k unmasked convolution of the previous
    row's hidden state. Receptive field: a triangle above the pixel.
    """

    def __init__(self, in_features: int, hidden: int, channels: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        gate_groups = channel_groups(hidden, channels).repeat(4)
        self.input_to_state = MaskedConv2d(channel_groups(in_features, channels), gate_groups, (1, kernel), "B")
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        gates_in = self.input_to_state(x)  # (B, 4h, H, W), computed for the whole map at once
        if bias is not None:
            gates_in = gates_in + bias
        batch, _, _, width = gates_in.shape
        h = gates_in.new_zeros(batch, self.hidden, width)
        c = gates_in.new_zeros(batch, self.hidden, width, dtype=cell_dtype(gates_in))
        rows = []
        for row_in in gates_in.unbind(2):  # unbind: one gradient copy for all rows, not one per row
            h, c = lstm_cell(row_in + self.state_to_state(h), c)
            rows.append(h)
        return torch.stack(rows, dim=2)  # (B, h, H, W)


def skew(x: Tensor) -> Tensor:
    """(H, W, ...) -> (H, W+H-1, ...): row r shifted right by r, zeros elsewhere (Sec. 3.2, Figure 3).

    Rows and columns lead so that a column of the skewed map is a block of whole feature vectors.
    """
    height, width, *rest = x.shape
    padded = torch.cat([x, x.new_zeros(height, height, *rest)], dim=1)  # (H, W+H, ...)
    return padded.flatten(0, 1)[: height * (width + height - 1)].view(height, width + height - 1, *rest)


def unskew(x: Tensor) -> Tensor:
    """Inverse of `skew`: (H, W+H-1, ...) -> (H, W, ...)."""
    height, skewed_width, *rest = x.shape
    width = skewed_width - height + 1
    flat = torch.cat([x.flatten(0, 1), x.new_zeros(height, *rest)])  # row r starts r places further along
    return flat.view(height, skewed_width + 1, *rest)[:, :width]


def shift_down(x: Tensor) -> Tensor:
    """Shift a (..., H, W) map down by one row, zero row on top (Sec. 3.2: hides the future)."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


class DiagonalBiLSTM(nn.Module):
    """Diagonal BiLSTM (Sec. 3.2): two diagonal LSTMs; receptive field = the whole past.

    Input-to-state: 1x1 mask-B convolution. State-to-state: a 2x1 convolution down a
    column of the skewed map, so cell (i, j) reads (i-1, j) and (i, j-1). The second
    direction runs on the mirrored map; its output is shifted down one row before it is
    added, so the current row's future never leaks. Both directions run in one loop, and
    each step computes only the rows that the skewed column covers.
    """

    def __init__(self, in_features: int, hidden: int, channels: int):
        super().__init__()
        self.hidden = hidden
        gate_groups = channel_groups(hidden, channels).repeat(8)  # [forward gates, reverse gates]
        self.input_to_state = MaskedConv2d(channel_groups(in_features, channels), gate_groups, (1, 1), "B")
        # state_to_state[d] maps [h(i-1, j), h(i, j-1)] (2h) -> 4h gates for direction d
        self.state_to_state = nn.Parameter(torch.randn(2, 4 * hidden, 2 * hidden) / (2 * hidden) ** 0.5)
        self.state_bias = nn.Parameter(torch.zeros(2, 4 * hidden, 1))

    def state_matrices(self) -> tuple[Tensor, Tensor]:
        """state_to_state for both directions at once -> (from above, from the left), each (2h, 8h).

        Block-diagonal: rows [forward h; reverse h] -> columns [forward gates; reverse gates].
        """
        h = self.hidden
        above, left = self.state_to_state[:, :, :h], self.state_to_state[:, :, h:]  # (2, 4h, h) each
        return torch.block_diag(above[0].t(), above[1].t()), torch.block_diag(left[0].t(), left[1].t())

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        forward_state, reverse_state = self.streams(x, bias)
        return forward_state + shift_down(reverse_state)

    def streams(self, x: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The two directions' states (B, h, H, W) each, in image coordinates: the left-to-right one, and the
        right-to-left one (computed on the mirrored map and mirrored back) before its shift down."""
        batch, _, height, width = x.shape
        hidden = self.hidden
        # input-to-state for the whole map, laid out (H, W, B, 8h); the state bias joins the conv's bias
        w_in = self.input_to_state.masked_weight()[:, :, 0, 0]  # (8h, 2h)
        gates_in = F.linear(x.permute(2, 3, 0, 1), w_in, self.input_to_state.bias + self.state_bias.flatten())
        if bias is not None:
            gates_in = gates_in + bias.permute(2, 3, 0, 1)
        forward_in, reverse_in = gates_in.chunk(2, dim=-1)
        both_in = skew(torch.cat([forward_in, reverse_in.flip(1)], dim=-1))  # (H, W+H-1, B, 8h): [fwd; rev]
        w_above, w_left = self.state_matrices()
        h = x.new_zeros(height, batch, 2 * hidden, dtype=gates_in.dtype)  # [forward h; reverse h] per row
        c = x.new_zeros(height, batch, 2 * hidden, dtype=cell_dtype(gates_in))  # cell state stays float32
        columns = []
        for t, column_in in enumerate(both_in.unbind(1)):  # unbind: one gradient copy, not one per column
            lo, hi = max(0, t - width + 1), min(t, height - 1)  # the rows this column of the skewed map covers
            n = hi - lo + 1
            # cells outside the image have a zero state, like a convolution's zero padding
            above = h[lo - 1 : hi] if lo > 0 else F.pad(h[:hi], (0, 0, 0, 0, 1, 0))  # h(i-1, j)
            gates = torch.addmm(column_in[lo : hi + 1].reshape(n * batch, 8 * hidden),
                                h[lo : hi + 1].reshape(n * batch, 2 * hidden), w_left)  # + h(i, j-1)
            gates = torch.addmm(gates, above.reshape(n * batch, 2 * hidden), w_above)
            h_new, c_new = lstm_cell(gates.view(n * batch * 2, 4 * hidden), c[lo : hi + 1].reshape(-1, hidden))
            h = F.pad(h_new.view(n, batch, 2 * hidden), (0, 0, 0, 0, lo, height - 1 - hi))
            c = F.pad(c_new.view(n, batch, 2 * hidden), (0, 0, 0, 0, lo, height - 1 - hi))
            columns.append(h)
        both_out = unskew(torch.stack(columns, dim=1)).permute(2, 3, 0, 1)  # (B, 2h, H, W)
        return both_out[:, :hidden], both_out[:, hidden:].flip(-1)


class PixelCNNBlock(nn.Module):
    """PixelCNN residual block (Sec. 3.5, Figure 5): 2h -> 1x1 h -> 3x3 mask B -> 1x1 2h, + input."""

    def __init__(self, features: int, channels: int, kernel: int = 3, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        groups_2h, groups_h = channel_groups(features, channels), channel_groups(features // 2, channels)
        self.reduce = MaskedConv2d(groups_2h, groups_h, (1, 1), "B")
        self.conv = MaskedConv2d(groups_h, groups_h, (kernel, kernel), "B")
        self.expand = MaskedConv2d(groups_h, groups_2h, (1, 1), "B")

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        t = self.conv(F.relu(self.reduce(F.relu(x))))
        if bias is not None:
            t = t + bias
        return x + self.expand(F.dropout(F.relu(t), self.dropout, self.training))


class ConditionalBias(nn.Module):
    """Conditioning as a bias on a layer's input-to-state map (Sec. 2.2 and 3.6).

    A class label adds a learned per-class vector; a conditioning map (the upsampled
    small image of the Multi-Scale PixelRNN) adds a learned 1x1 projection of itself.
    """

    def __init__(self, features: int, num_classes: int | None, cond_channels: int):
        super().__init__()
        self.class_bias = nn.Embedding(num_classes, features) if num_classes else None
        self.cond_bias = nn.Conv2d(cond_channels, features, 1) if cond_channels else None

    def forward(self, y: Tensor | None, cond: Tensor | None) -> Tensor | None:
        bias = None
        if self.class_bias is not None and y is not None:
            bias = self.class_bias(y)[:, :, None, None]  # (B, F, 1, 1)
        if self.cond_bias is not None and cond is not None:
            bias = self.cond_bias(cond) if bias is None else bias + self.cond_bias(cond)
        return bias
