"""What the network sees, and how it computes: maps measured from the model itself (Sec. 3, Fig. 2 / 3 / 4).

The Row LSTM sees a triangle above a pixel (and its left neighbours), the Diagonal BiLSTM the whole past, the
PixelCNN a window that grows with depth and has a blind spot. These maps are not drawn templates: they are the
sub-pixels with a non-zero gradient of the prediction, in float64, OR-ed over a few random inputs so that a
ReLU that happens to be off does not hide a real connection. `computation` shows a teacher-forced pass the way
the network runs it: the Row LSTM row by row, the Diagonal BiLSTM diagonal by diagonal in two directions, the
PixelCNN layer by layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from pixelrnn.model import Model, MultiScalePixelRNN, PixelRNN, scale_pixels
from pixelrnn.nn import skew


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
    count = len(positions) * trials
    # the same `trials` random inputs (and projections) for every position: a position's field does not depend
    # on which others share its pass
    inputs, cond = _random_inputs(net, trials, generator)
    inputs = inputs.repeat(len(positions), 1, 1, 1).requires_grad_()
    cond = None if cond is None else cond.repeat(len(positions), 1, 1, 1)
    labels = None if net.num_classes is None else torch.full((count,), 0 if y is None else y)
    rows, cols, channels = torch.tensor(positions).repeat_interleave(trials, 0).T
    logits = probe.forward_scaled(inputs, labels, cond)  # (count, levels, C, H, W)
    picked = logits.permute(0, 2, 3, 4, 1)[torch.arange(count), channels, rows, cols]  # (count, levels)
    projection = torch.randn((trials, net.levels), generator=generator, dtype=torch.float64).repeat(len(positions), 1)
    (gradient,) = torch.autograd.grad((picked * projection).sum(), inputs)
    return (gradient != 0).unflatten(0, (len(positions), trials)).any(1)


def _random_inputs(net: PixelRNN, trials: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """`trials` random relaxed inputs (trials, C, H, W) in [-1, 1], and conditioning maps for a model that takes
    them (else None), float64."""
    inputs = torch.rand((trials, net.channels, net.height, net.width), generator=generator, dtype=torch.float64)
    cond = None if not net.cond_channels else torch.randn(trials, net.cond_channels, net.height, net.width,
                                                           generator=generator, dtype=torch.float64)
    return inputs * 2 - 1, cond


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
    net = _full_size(model, row, col, 0 if channel is None else channel)
    probe, inputs, labels, cond = _teacher_forced(model, image, y, torch.float64)
    inputs.requires_grad_()
    logits = probe.forward_scaled(inputs, labels, cond)  # (1, levels, C, H, W)
    x = torch.as_tensor(image).long().cpu()[None]
    channels = range(net.channels) if channel is None else [channel]
    log_p = sum(torch.log_softmax(logits[0, :, c, row, col], 0)[x[0, c, row, col]] for c in channels)
    (gradient,) = torch.autograd.grad(log_p, inputs)
    return gradient[0].abs().sum(0).detach()


def _teacher_forced(model: Model, image: Tensor, y: int | None, dtype: torch.dtype
                    ) -> tuple[PixelRNN, Tensor, Tensor | None, Tensor | None]:
    """A CPU copy of the model's full-size PixelRNN in `dtype`, and its inputs for `image` (C, H, W): (net,
    scaled pixels (1, C, H, W), label (1,) or None, conditioning map from the image's own small image or None)."""
    probe = copy.deepcopy(model).cpu().to(dtype).eval()
    x = torch.as_tensor(image).long().cpu()[None]  # (1, C, H, W)
    multiscale = isinstance(probe, MultiScalePixelRNN)
    net = probe.large if multiscale else probe
    labels = None if net.num_classes is None else torch.tensor([0 if y is None else y])
    with torch.no_grad():
        cond = probe.condition(probe.downsample(x)) if multiscale else None
    return net, scale_pixels(x, net.levels, dtype), labels, cond


def layer_states(net: PixelRNN, inputs: Tensor, labels: Tensor | None = None, cond: Tensor | None = None
                 ) -> list[tuple[Tensor, ...]]:
    """Each layer's states (B, F, H, W) in one pass: a Row LSTM's h or a PixelCNN block's output, a Diagonal
    BiLSTM's two directions (`DiagonalBiLSTM.streams`: left to right, and right to left before its shift down)."""
    return [net.layers[k].streams(*args) if net.arch == "diagonal_bilstm" else (output,)
            for k, (args, output) in enumerate(layer_calls(net, inputs, labels, cond))]


def layer_calls(net: PixelRNN, inputs: Tensor, labels: Tensor | None = None, cond: Tensor | None = None
                ) -> list[tuple[tuple, Tensor]]:
    """Each layer's (arguments, output) in one pass of `net` on scaled `inputs` (B, C, H, W): a recurrent
    layer's output is its h (B, h, H, W), a PixelCNN block's its 2h features."""
    calls: list[tuple[tuple, Tensor]] = []
    hooks = [layer.register_forward_hook(lambda _, args, output: calls.append((args, output)))
             for layer in net.layers]
    try:
        net.forward_scaled(inputs, labels, cond)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


@dataclass
class Panel:
    """One map of a teacher-forced pass: a layer's state (or one direction's) and when the pass computes it."""

    title: str
    layer: int  # 0-based
    values: Tensor  # (H', W') float: the norm of the state's features at each position
    step: Tensor  # (H', W') long: the step of the pass that computes each position (-1: none, a skew's padding)
    state: int = 0  # which of the layer's states (`layer_states`) it shows
    skewed: bool = False  # shown on the skewed map (H, W + H - 1)


def computation(model: Model, image: Tensor, y: int | None = None) -> list[Panel]:
    """The panels of one teacher-forced pass of `model` (a Multi-Scale model: its full-size stage) on `image`
    (C, H, W), layer after layer, as the network computes it: the Row LSTM's state row by row (Sec. 3.1), each
    Diagonal BiLSTM direction diagonal by diagonal, one column of the skewed map per step (Sec. 3.2, Fig. 3),
    the PixelCNN's every position of a block at once (Sec. 3.5). Sampling instead always runs in raster order."""
    net, inputs, labels, cond = _teacher_forced(model, image, y, torch.float32)
    with torch.no_grad():
        states = layer_states(net, inputs, labels, cond)
    height, width = net.height, net.width
    rows, cols = torch.arange(height)[:, None].expand(height, width), torch.arange(width).expand(height, width)
    diagonals = height + width - 1  # the skewed map's columns
    panels = []
    for k, maps in enumerate(states):
        norms = [state[0].norm(dim=0) for state in maps]  # (H, W) each
        if net.arch == "pixelcnn":
            panels.append(Panel(f"block {k + 1}", k, norms[0], torch.full((height, width), k)))
        elif net.arch == "row_lstm":
            panels.append(Panel(f"layer {k + 1}", k, norms[0], k * height + rows))
        else:
            start, inside = k * diagonals, skew(torch.ones(height, width, dtype=torch.bool))
            skewed_step = torch.where(inside, start + torch.arange(diagonals), -1)
            panels += [Panel(f"layer {k + 1}: from left", k, norms[0], start + rows + cols),
                       Panel(f"layer {k + 1}: from right", k, norms[1], start + rows + (width - 1 - cols), state=1),
                       Panel(f"layer {k + 1}: from left, skewed", k, skew(norms[0]), skewed_step, skewed=True)]
    return panels


def layer_fields(model: Model, row: int, col: int, y: int | None = None, trials: int = 3, seed: int = 0
                 ) -> list[Tensor]:
    """Per layer, (S, H, W) bool: the pixels that each of its states (`layer_states`) at pixel (row, col) depends
    on (a Multi-Scale model: its full-size stage), measured like `receptive_fields` from gradients of random
    projections of that state, in float64: the receptive field growing layer by layer. A Diagonal BiLSTM's
    right-to-left state reads the rest of its own row, which is why the layer adds it one row lower."""
    net = _full_size(model, row, col, 0)
    probe = copy.deepcopy(net).cpu().double().eval()
    generator = torch.Generator().manual_seed(seed)
    inputs, cond = _random_inputs(net, trials, generator)
    inputs.requires_grad_()
    labels = None if net.num_classes is None else torch.full((trials,), 0 if y is None else y)

    def depends_on(state: Tensor) -> Tensor:  # (H, W) bool: the pixels that state (trials, features) depends on
        projection = torch.randn(state.shape, generator=generator, dtype=torch.float64)
        (gradient,) = torch.autograd.grad((state * projection).sum(), inputs, retain_graph=True)
        return (gradient != 0).any(1).any(0)

    return [torch.stack([depends_on(state[:, :, row, col]) for state in states])
            for states in layer_states(probe, inputs, labels, cond)]
