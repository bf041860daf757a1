"""What the network sees: each prediction's receptive field, measured from the model itself (Sec. 3, Fig. 2 / 4).

The Row LSTM sees a triangle above a pixel (and its left neighbours), the Diagonal BiLSTM the whole past, the
PixelCNN a window that grows with depth and has a blind spot. These maps are not drawn templates: they are the
sub-pixels with a non-zero gradient of the prediction, in float64, OR-ed over a few random inputs so that a
ReLU that happens to be off does not hide a real connection.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from pixelrnn.model import Model, MultiScalePixelRNN, PixelRNN, scale_pixels


def _full_size(model: Model, row: int, col: int, channel: int) -> PixelRNN:
    """The model's full-size PixelRNN (a Multi-Scale model's large one); ValueError for a sub-pixel outside it."""
    net = model.large if isinstance(model, MultiScalePixelRNN) else model
    if not (0 <= row < net.height and 0 <= col < net.width and 0 <= channel < net.channels):
        raise ValueError(f"sub-pixel ({row}, {col}, {channel}) lies outside a {net.channels}x{net.height}x"
                         f"{net.width} image")
    return net


def receptive_field(model: Model, row: int, col: int, channel: int = 0, y: int | None = None,
                    trials: int = 3, seed: int = 0) -> Tensor:
    """(C, H, W) bool: the sub-pixels the distribution of sub-pixel (row, col, channel) depends on in `model`
    (a Multi-Scale model: its full-size stage, given the small image).

    Measured as the support of the gradient of random projections of that sub-pixel's logits with respect to a
    relaxed (float) input, in a float64 copy of the model."""
    return receptive_fields(model, [(row, col, channel)], y, trials, seed)[0]


def receptive_fields(model: Model, positions: list[tuple[int, int, int]], y: int | None = None, trials: int = 3,
                     seed: int = 0) -> Tensor:
    """(P, C, H, W) bool: `receptive_field` of each (row, col, channel) in `positions`, from one forward and
    backward pass over a batch of P x trials random inputs (the batch elements do not interact, so each one's
    gradient is its own position's)."""
    net = _full_size(model, *positions[0])
    for position in positions[1:]:
        _full_size(model, *position)
    probe = copy.deepcopy(net).cpu().double().eval()
    generator = torch.Generator().manual_seed(seed)
    shape, count = (trials, net.channels, net.height, net.width), len(positions) * trials
    # the same `trials` random inputs (and projections) for every position: a position's field does not depend
    # on which others share its pass
    inputs = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).repeat(len(positions), 1, 1, 1)
    inputs.requires_grad_()
    labels = None if net.num_classes is None else torch.full((count,), 0 if y is None else y)
    cond = None if not net.cond_channels else torch.randn(trials, net.cond_channels, net.height, net.width,
                                                           generator=generator, dtype=torch.float64
                                                           ).repeat(len(positions), 1, 1, 1)
    rows, cols, channels = torch.tensor(positions).repeat_interleave(trials, 0).T
    logits = probe.forward_scaled(inputs, labels, cond)  # (count, levels, C, H, W)
    picked = logits.permute(0, 2, 3, 4, 1)[torch.arange(count), channels, rows, cols]  # (count, levels)
    projection = torch.randn((trials, net.levels), generator=generator, dtype=torch.float64).repeat(len(positions), 1)
    (gradient,) = torch.autograd.grad((picked * projection).sum(), inputs)
    return (gradient != 0).unflatten(0, (len(positions), trials)).any(1)


def pixel_fields(model: Model, channel: int = 0, y: int | None = None, batch: int | None = None) -> Tensor:
    """(H, W, H, W) bool: for each pixel (row, col) of the full-size image, the pixels (any channel) that the
    distribution of its sub-pixel `channel` depends on: `receptive_fields` of every pixel, `batch` at a time
    (default: as many as keep a pass's logits near 64 MB, at most 32; a CIFAR-10 model: 3)."""
    net = model.large if isinstance(model, MultiScalePixelRNN) else model
    batch = batch or max(1, min(32, 2**23 // (3 * net.levels * net.channels * net.height * net.width)))
    positions = [(r, c, channel) for r in range(net.height) for c in range(net.width)]
    maps = [receptive_fields(model, positions[k : k + batch], y).any(1) for k in range(0, len(positions), batch)]
    return torch.cat(maps).reshape(net.height, net.width, net.height, net.width)


def influence(model: Model, image: Tensor, row: int, col: int, channel: int | None = None, y: int | None = None
              ) -> Tensor:
    """(H, W) float: how strongly each pixel of `image` (C, H, W) moved the log-probability of the true value of
    pixel (row, col) (all its channels, or sub-pixel `channel`): the size of its gradient with respect to a
    relaxed (float) input, summed over the input pixel's channels, in a float64 copy of the model. Zero outside
    the receptive field; a Multi-Scale model: its full-size stage, given the image's own small image."""
    multiscale = isinstance(model, MultiScalePixelRNN)
    net = _full_size(model, row, col, 0 if channel is None else channel)
    probe = copy.deepcopy(model).cpu().double().eval()
    x = torch.as_tensor(image).long().cpu()[None]  # (1, C, H, W)
    inputs = scale_pixels(x, net.levels, torch.float64).requires_grad_()
    labels = None if net.num_classes is None else torch.tensor([0 if y is None else y])
    cond = probe.condition(probe.downsample(x)) if multiscale else None
    logits = (probe.large if multiscale else probe).forward_scaled(inputs, labels, cond)  # (1, levels, C, H, W)
    channels = range(net.channels) if channel is None else [channel]
    log_p = sum(torch.log_softmax(logits[0, :, c, row, col], 0)[x[0, c, row, col]] for c in channels)
    (gradient,) = torch.autograd.grad(log_p, inputs)
    return gradient[0].abs().sum(0).detach()
