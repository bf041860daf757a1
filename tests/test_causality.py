"""Exact causality of every architecture, in raster-then-channel order (Sec. 2.1).

`dependencies` perturbs each sub-pixel in turn (in float64, so "no effect" is exact up to
rounding far below the 1e-9 threshold) and records which logits moved.
"""

import pytest
import torch

import pixelrnn
from pixelrnn.nn import MaskedConv2d

THRESHOLD = 1e-9  # a logit "changed" if it moved by more than this (float64 arithmetic)


def dependencies(model, channels: int, height: int, width: int, levels: int, y=None, trials: int = 3) -> torch.Tensor:
    """deps[k_out, k_in]: do the logits of sub-pixel k_out change when sub-pixel k_in changes?

    Sub-pixels are numbered in generation order: k = (row * width + col) * channels + channel.
    The answer is OR-ed over `trials` random base images, so that a ReLU that happens to be
    off at one image does not hide a real connection.
    """
    if trials > 1:
        return torch.stack([dependencies(model, channels, height, width, levels, y, 1) for _ in range(trials)]).any(0)
    n = channels * height * width
    x = torch.randint(0, levels, (1, channels, height, width))
    perturbed = x.repeat(n, 1, 1, 1)
    for k in range(n):
        pixel, c = divmod(k, channels)
        r, j = divmod(pixel, width)
        perturbed[k, c, r, j] = (x[0, c, r, j] + levels // 2) % levels
    labels = None if y is None else torch.full((1,), y)
    with torch.no_grad():
        base = model(x, labels)  # (1, levels, C, H, W)
        moved = model(perturbed, None if y is None else labels.repeat(n))
    change = (moved - base).abs().amax(dim=1)  # (n, C, H, W)
    return (change.permute(0, 2, 3, 1).reshape(n, n) > THRESHOLD).T  # [k_out, k_in]


def make(arch, channels, levels, height, width, num_classes=None, **hparams):
    """A small float64 model with weights large enough that no ReLU is off everywhere."""
    hparams = {"hidden": 9, "layers": 2, **hparams}
    model = pixelrnn.build_model(arch, channels, levels, height, width, num_classes, **hparams).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def index(channels: int, width: int, r: int, j: int, c: int = 0) -> int:
    return (r * width + j) * channels + c


CASES = [
    (arch, channels, levels, height, width, num_classes)
    for arch in pixelrnn.ARCHS
    for channels, levels in ((3, 256), (1, 2))
    for height, width in ((5, 5), (4, 7), (6, 3))
    for num_classes in (None, 4)
]
# with a learned map per class: a per-pixel bias in every layer, which must not open a path between pixels
CASES_AND_MAPS = [(*case, None) for case in CASES] + [(arch, 3, 256, 4, 7, 4, 2) for arch in pixelrnn.ARCHS]


@pytest.mark.parametrize("arch,channels,levels,height,width,num_classes,class_maps", CASES_AND_MAPS)
def test_no_future_leak_and_no_over_masking(arch, channels, levels, height, width, num_classes, class_maps):
    model = make(arch, channels, levels, height, width, num_classes, class_maps=class_maps)
    deps = dependencies(model, channels, height, width, levels, y=None if num_classes is None else 2)
    n = deps.shape[0]
    # a sub-pixel never sees itself or anything generated after it
    assert not torch.triu(deps).any(), "future (or self) leak"
    for r in range(height):
        for j in range(width):
            for c in range(channels):
                k = index(channels, width, r, j, c)
                if c > 0:  # G sees R, B sees G of the same pixel
                    assert deps[k, k - 1], f"({r},{j}) channel {c} blind to channel {c - 1}"
                if j > 0 and c == 0:  # every channel of the left neighbour
                    for c_left in range(channels):
                        assert deps[k, index(channels, width, r, j - 1, c_left)], f"({r},{j}) blind to left"
                if r > 0:
                    assert deps[k, index(channels, width, r - 1, j, c)], f"({r},{j}) blind to the pixel above"
    assert n == channels * height * width


@pytest.mark.parametrize("channels,levels", [(1, 2), (3, 256)])
def test_diagonal_bilstm_sees_the_whole_past(channels, levels):
    """Every earlier sub-pixel, with one exception the paper's layers imply.

    The last sub-pixel of row r-1 enters the network only through the 7x7 mask-A conv at
    positions to its right (none) or below (reach 3), and the forward stream carries it
    only rightwards: pixels (r, j) with j + 3 < W - 1 cannot see it.
    """
    height, width = 5, 6
    deps = dependencies(make("diagonal_bilstm", channels, levels, height, width), channels, height, width, levels)
    expected = torch.tril(torch.ones_like(deps), diagonal=-1)
    for r in range(1, height):
        last_of_previous_row = index(channels, width, r - 1, width - 1, channels - 1)
        for j in range(width - 4):
            for c in range(channels):
                expected[index(channels, width, r, j, c), last_of_previous_row] = False
    assert torch.equal(deps, expected)


@pytest.mark.parametrize("channels,levels", [(1, 2), (3, 256)])
def test_row_lstm_triangle_misses_far_upper_left(channels, levels):
    height, width = 4, 16
    row = make("row_lstm", channels, levels, height, width)
    diag = make("diagonal_bilstm", channels, levels, height, width)
    target, far_upper_left = index(channels, width, 3, 15), index(channels, width, 2, 0)
    assert not dependencies(row, channels, height, width, levels)[target, far_upper_left]
    assert dependencies(diag, channels, height, width, levels)[target, far_upper_left]


@pytest.mark.parametrize("channels,levels", [(1, 2), (3, 256)])
def test_pixelcnn_blind_spot(channels, levels):
    """A stack of masked 3x3 convs never reaches far right in the rows above (Sec. 3.5)."""
    height, width = 4, 12
    cnn = make("pixelcnn", channels, levels, height, width, layers=6)
    diag = make("diagonal_bilstm", channels, levels, height, width)
    target, upper_right = index(channels, width, 2, 2), index(channels, width, 1, 9)
    assert not dependencies(cnn, channels, height, width, levels)[target, upper_right]
    assert dependencies(diag, channels, height, width, levels)[target, upper_right]


def test_multiscale_large_model_is_causal_given_the_small_image():
    model = make("row_lstm", 3, 256, 6, 6, factor=2)
    small = torch.randint(0, 256, (1, 3, 3, 3))
    cond = model.condition(small)

    class Large(torch.nn.Module):
        def forward(self, x, y=None):
            return model.large(x, y, cond.expand(x.shape[0], -1, -1, -1))

    deps = dependencies(Large(), 3, 6, 6, 256)
    assert not torch.triu(deps).any()
    assert deps[index(3, 6, 2, 2, 1), index(3, 6, 2, 2, 0)]


def receptive_field(arch: str, channels: int, height: int, width: int, layers: int) -> torch.Tensor:
    """The exact dependency set [k_out, k_in] that the paper's layer stack implies, derived symbolically.

    Each feature map position carries, per colour group g, the set of input sub-pixels it can
    depend on (a bool vector over k_in); every layer of Sec. 3 is applied as set union:
    7x7 mask A; Row LSTM (1x3 mask-B input-to-state, 1x3 unmasked state-to-state from the row
    above); Diagonal BiLSTM (1x1 mask B, states from (i-1, j) and (i, j-1), the mirrored stream
    from (i-1, j) and (i, j+1) shifted down one row); PixelCNN block (1x1, 3x3 mask B, 1x1);
    residual and skip connections; a 1x1 mask-B head. Independent of the model code.
    """
    n = channels * height * width
    deps = torch.zeros(height, width, channels, n, dtype=torch.bool)  # [row, col, group, k_in]
    groups = range(channels)

    def below_or_same_group(t):  # a 1x1 mask-B layer: group g sees groups <= g at the same position
        return t.cumsum(2) > 0

    for r in range(height):  # 7x7 mask A: rows above, the left of this row, earlier channels of this pixel
        for j in range(width):
            for dr in range(-3, 1):
                for dj in range(-3, 4):
                    rr, jj = r + dr, j + dj
                    if not (0 <= rr < height and 0 <= jj < width) or (dr == 0 and dj > 0):
                        continue
                    for g in groups:
                        for c in groups:
                            if dr < 0 or dj < 0 or c < g:
                                deps[r, j, g, index(channels, width, rr, jj, c)] = True
    features, skip = deps, torch.zeros_like(deps)
    for _ in range(layers):
        if arch == "pixelcnn":
            reduced, conv = below_or_same_group(features), torch.zeros_like(features)
            for r in range(height):
                for j in range(width):
                    seen = reduced[max(r - 1, 0) : r, max(j - 1, 0) : j + 2].flatten(0, 1).any(0).any(0)
                    if j > 0:
                        seen = seen | reduced[r, j - 1].any(0)
                    conv[r, j] = seen | reduced[r, j]  # reduced is already cumulative over groups
            features = features | below_or_same_group(conv)
        else:
            gates_in = below_or_same_group(features)
            hidden = torch.zeros_like(features)
            if arch == "row_lstm":
                for r in range(height):
                    for j in range(width):
                        state = gates_in[r, j] | (gates_in[r, j - 1].any(0) if j > 0 else False)
                        if r > 0:
                            state = state | hidden[r - 1, max(j - 1, 0) : j + 2].any(0).any(0) | hidden[r - 1, j]
                        hidden[r, j] = state
            else:
                forward, reverse = torch.zeros_like(features), torch.zeros_like(features)
                for r in range(height):
                    for j in range(width):
                        forward[r, j] = gates_in[r, j] | (forward[r - 1, j].any(0) if r > 0 else False) | (
                            forward[r, j - 1].any(0) | forward[r, j - 1] if j > 0 else False)
                    for j in reversed(range(width)):
                        reverse[r, j] = gates_in[r, j] | (reverse[r - 1, j].any(0) if r > 0 else False) | (
                            reverse[r, j + 1].any(0) | reverse[r, j + 1] if j + 1 < width else False)
                hidden = forward.clone()
                hidden[1:] |= reverse[:-1]  # the mirrored stream, shifted down one row
            features = features | below_or_same_group(hidden)  # residual: 1x1 mask B, added
        skip = skip | below_or_same_group(features)
    out = below_or_same_group(below_or_same_group(skip))  # head: two 1x1 mask-B layers
    return out.reshape(n, n)  # k_out = (r * W + j) * C + c, the output group of channel c is c


@pytest.mark.parametrize("arch", pixelrnn.ARCHS)
@pytest.mark.parametrize("channels,levels,height,width,layers", [(1, 2, 5, 12, 2), (3, 256, 4, 11, 3), (1, 2, 8, 5, 1)])
def test_dependencies_are_exactly_the_paper_receptive_field(arch, channels, levels, height, width, layers):
    """Row LSTM: its triangle, row by row; PixelCNN: its blind spot; Diagonal BiLSTM: the whole past
    (less the one exception of test_diagonal_bilstm_sees_the_whole_past). Too much or too little fails."""
    model = make(arch, channels, levels, height, width, layers=layers)
    deps = dependencies(model, channels, height, width, levels)
    expected = receptive_field(arch, channels, height, width, layers)
    missing, extra = (expected & ~deps).nonzero().tolist(), (deps & ~expected).nonzero().tolist()
    assert not missing and not extra, f"missing {missing[:5]} extra {extra[:5]} ([k_out, k_in])"


@pytest.mark.parametrize("arch", pixelrnn.ARCHS)
def test_every_masked_layer_but_the_first_uses_mask_b(arch):
    """Mask A only in the 7x7 input conv (Sec. 3.4); a mask A elsewhere keeps causality but wastes capacity."""
    model = make(arch, 3, 256, 6, 6, factor=2)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, MaskedConv2d)}
    assert len(convs) > 10
    for name, conv in convs.items():
        assert conv.mask_type == ("A" if name.endswith("input_conv") else "B"), name
        if conv.mask_type == "B":  # every output feature sees its own group at the centre
            assert conv.mask[:, :, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2].any(1).all(), name


@pytest.mark.parametrize("arch", pixelrnn.ARCHS)
@pytest.mark.parametrize("hparams", [{}, {"num_classes": 3}, {"factor": 2}, {"num_classes": 3, "class_maps": 2}])
def test_every_parameter_gets_a_gradient(arch, hparams):
    """Catches a layer that is built but never used (a dropped skip, bias or stream)."""
    model = make(arch, 3, 256, 6, 6, **hparams)
    y = torch.tensor([0, 2]) if "num_classes" in hparams else None
    model.log_prob(torch.randint(0, 256, (2, 3, 6, 6)), y).sum().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused, unused
