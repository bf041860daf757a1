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
    net = _full_size(model, row, col, channel)
    probe = copy.deepcopy(net).cpu().double().eval()
    generator = torch.Generator().manual_seed(seed)
    shape = (trials, net.channels, net.height, net.width)
    inputs = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).requires_grad_()
    labels = None if net.num_classes is None else torch.full((trials,), 0 if y is None else y)
    cond = None if not net.cond_channels else torch.randn(trials, net.cond_channels, net.height, net.width,
                                                           generator=generator, dtype=torch.float64)
    logits = probe.forward_scaled(inputs, labels, cond)[:, :, channel, row, col]  # (trials, levels)
    projection = torch.randn(logits.shape, generator=generator, dtype=torch.float64)
    (gradient,) = torch.autograd.grad((logits * projection).sum(), inputs)
    return (gradient != 0).any(0)


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
