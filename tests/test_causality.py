"""Exact causality of every architecture, in raster-then-channel order (Sec. 2.1).

`dependencies` perturbs each sub-pixel in turn (in float64, so "no effect" is exact up to
rounding far below the 1e-9 threshold) and records which logits moved.
"""

import pytest
import torch

import pixelrnn

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


@pytest.mark.parametrize("arch,channels,levels,height,width,num_classes", CASES)
def test_no_future_leak_and_no_over_masking(arch, channels, levels, height, width, num_classes):
    model = make(arch, channels, levels, height, width, num_classes)
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
