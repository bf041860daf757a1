"""PixelRNN models: PixelCNN, Row LSTM and Diagonal BiLSTM stacks, and the Multi-Scale PixelRNN.

One class, `PixelRNN`, builds every single-scale architecture of Table 1:
    7x7 mask-A conv -> `layers` residual layers -> ReLU, 1x1 mask B, ReLU, 1x1 mask B -> softmax
Logits are (B, levels, C, H, W): a `levels`-way softmax per sub-pixel (Sec. 5.3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from pixelrnn.nn import (
    ConditionalBias,
    DiagonalBiLSTM,
    MaskedConv2d,
    PixelCNNBlock,
    RowLSTM,
    channel_groups,
)

ARCHS = ("pixelcnn", "row_lstm", "diagonal_bilstm")
DEFAULT_LAYERS = {"pixelcnn": 15, "row_lstm": 7, "diagonal_bilstm": 7}  # paper sizes (Sec. 5)
HUB_TAGS = ["pixelrnn", "image-generation", "autoregressive", "arxiv:1601.06759"]


def scale_pixels(x: Tensor, levels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Integer pixels in [0, levels) -> floats in [-1, 1], the network's input."""
    return x.to(dtype) * (2.0 / (levels - 1)) - 1.0


def bits_per_dim(nats: Tensor | float, dims: int) -> Tensor | float:
    """NLL in nats per image -> bits per sub-pixel: nats / (C*H*W*ln 2)."""
    return nats / (dims * math.log(2))


def _load_checked(cls: type, name_or_path: str, *, device: str | torch.device = "cpu") -> nn.Module:
    """`from_pretrained` of both model classes: `pixelrnn.load`'s one checked path (config validated, weights from
    model.safetensors only, every tensor matched strictly), and a clear error for a checkpoint of the other class.
    (The Hub mixin's own loader would load with strict=False, fall back to pickle files, and build a PixelRNN
    from a Multi-Scale config with none of the file's weights.)"""
    from pixelrnn.hub import CheckpointError, load

    model = load(name_or_path, device)
    if not isinstance(model, cls):
        raise CheckpointError(f"{name_or_path} holds a {type(model).__name__}, not a {cls.__name__}: load it with "
                              f"pixelrnn.load or {type(model).__name__}.from_pretrained")
    return model


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class PixelRNN(nn.Module, PyTorchModelHubMixin, library_name="pixelrnn", tags=HUB_TAGS, license="mit"):
    """A single-scale PixelRNN / PixelCNN over `channels` x `height` x `width` images.

    arch: "pixelcnn" | "row_lstm" | "diagonal_bilstm"; hidden: h (layers carry 2h
    features, recurrent states h); layers: residual layers after the first; skip: skip
    connections from every layer to the output (Sec. 3.3); num_classes: class-conditional
    when set; cond_channels: width of a conditioning map added as a bias in every layer
    (the large model of the Multi-Scale PixelRNN, Sec. 3.6).
    """

    from_pretrained = classmethod(_load_checked)

    def __init__(
        self,
        arch: str = "diagonal_bilstm",
        channels: int = 1,
        levels: int = 2,
        height: int = 28,
        width: int = 28,
        num_classes: int | None = None,
        hidden: int = 16,
        layers: int = 7,
        out_hidden: int = 64,
        skip: bool = True,
        cond_channels: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        _check_positive(channels=channels, levels=levels, height=height, width=width, hidden=hidden,
                        layers=layers, out_hidden=out_hidden)
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        if num_classes is not None:
            _check_positive(num_classes=num_classes)
        if not isinstance(cond_channels, int) or cond_channels < 0:
            raise ValueError(f"cond_channels must be a non-negative integer, got {cond_channels!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if hidden < channels:
            raise ValueError(f"hidden ({hidden}) must be at least channels ({channels}) for the colour groups")
        self.arch, self.channels, self.levels = arch, channels, levels
        self.height, self.width, self.num_classes = height, width, num_classes
        self.hidden, self.skip, self.cond_channels, self.dropout = hidden, skip, cond_channels, dropout

        features = 2 * hidden
        groups = channel_groups(features, channels)
        self.input_conv = MaskedConv2d(torch.arange(channels), groups, (7, 7), "A")
        self.input_bias = ConditionalBias(features, num_classes, cond_channels)
        if arch == "pixelcnn":
            self.layers = nn.ModuleList(PixelCNNBlock(features, channels, dropout=dropout) for _ in range(layers))
            bias_features = hidden
        else:
            recurrent = RowLSTM if arch == "row_lstm" else DiagonalBiLSTM
            self.layers = nn.ModuleList(recurrent(features, hidden, channels) for _ in range(layers))
            # residual: the h-feature output is lifted back to 2h by a 1x1 mask-B conv (Sec. 3.3)
            self.residuals = nn.ModuleList(
                MaskedConv2d(channel_groups(hidden, channels), groups, (1, 1), "B") for _ in range(layers)
            )
            bias_features = 4 * hidden if arch == "row_lstm" else 8 * hidden
        self.layer_biases = nn.ModuleList(
            ConditionalBias(bias_features, num_classes, cond_channels) for _ in range(layers)
        )
        if skip:
            self.skips = nn.ModuleList(MaskedConv2d(groups, groups, (1, 1), "B") for _ in range(layers))
        out_groups = channel_groups(out_hidden, channels)
        self.head = nn.ModuleList([
            MaskedConv2d(groups, out_groups, (1, 1), "B"),
            MaskedConv2d(out_groups, torch.arange(channels).repeat_interleave(levels), (1, 1), "B"),
        ])

    def check_inputs(self, x: Tensor, y: Tensor | None = None, cond: Tensor | None = None) -> None:
        """Raise ValueError with a clear message for input the model cannot take."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must be (B, {self.channels}, H, W), got shape {tuple(x.shape)}")
        if x.is_floating_point() or x.is_complex():
            raise ValueError(f"x must hold integer pixel levels in [0, {self.levels}), got dtype {x.dtype}")
        if x.numel():
            low, high = (int(v) for v in torch.aminmax(x))  # one pass, one host sync
            if low < 0 or high >= self.levels:
                raise ValueError(f"x values must lie in [0, {self.levels}), got [{low}, {high}]")
        if self.num_classes is None:
            if y is not None:
                raise ValueError("this model is unconditional: pass y=None")
        else:
            if y is None:
                raise ValueError(f"this model is class-conditional: pass y with labels in [0, {self.num_classes})")
            if y.shape != (x.shape[0],) or y.is_floating_point():
                raise ValueError(f"y must be an integer tensor of shape ({x.shape[0]},), got {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"class labels must lie in [0, {self.num_classes})")
        if self.cond_channels and (cond is None or cond.shape[1:] != (self.cond_channels, *x.shape[2:])):
            raise ValueError(f"this model needs a conditioning map of shape (B, {self.cond_channels}, H, W)")

    def forward(self, x: Tensor, y: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) integer levels -> logits (B, levels, C, H, W)."""
        if not (x.is_cuda and torch.cuda.is_current_stream_capturing()):  # checks sync; a CUDA graph cannot
            self.check_inputs(x, y, cond)
        return self.forward_scaled(scale_pixels(x, self.levels, self.input_conv.weight.dtype), y, cond)

    def forward_scaled(self, inputs: Tensor, y: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """`forward` on inputs already scaled to [-1, 1] (B, C, H, W), unchecked: a relaxed, differentiable
        input for maps of what each prediction depends on (pixelrnn.views)."""
        features = self.input_conv(inputs)  # (B, 2h, H, W)
        bias = self.input_bias(y, cond)
        if bias is not None:
            features = features + bias
        skip_sum = 0
        for k, layer in enumerate(self.layers):
            bias = self.layer_biases[k](y, cond)
            if self.arch == "pixelcnn":
                features = layer(features, bias)
            else:
                hidden_out = F.dropout(layer(features, bias), self.dropout, self.training)  # (B, h, H, W)
                features = features + self.residuals[k](hidden_out)
            if self.skip:
                skip_sum = skip_sum + self.skips[k](features)
        out = skip_sum if self.skip else features
        logits = self.head[1](F.relu(self.head[0](F.relu(out))))  # (B, C*levels, H, W)
        batch, _, height, width = logits.shape
        return logits.view(batch, self.channels, self.levels, height, width).transpose(1, 2)

    def log_prob(self, x: Tensor, y: Tensor | None = None, cond: Tensor | None = None,
                 keep: Tensor | None = None) -> Tensor:
        """log p(x) in nats per image, (B,); `keep` (H, W) bool scores only those pixels."""
        logits = self(x, y, cond).float()
        log_probs = -F.cross_entropy(logits, x.long(), reduction="none")  # (B, C, H, W)
        if keep is not None:
            log_probs = log_probs * keep
        return log_probs.flatten(1).sum(1)


class MultiScalePixelRNN(nn.Module, PyTorchModelHubMixin, library_name="pixelrnn", tags=HUB_TAGS, license="mit"):
    """Multi-Scale PixelRNN (Sec. 3.6).

    `small` is an unconditional PixelRNN on the image subsampled by `factor` (every
    factor-th pixel); `large` models the full image with the small one, upsampled by a
    learned deconvolution, as a bias in every layer. The small image fixes every
    factor-th pixel of the full one, so log p(x) = log p(small) + log p(other pixels | small):
    the large model scores only the pixels that the small image leaves open, exactly what
    the sampler draws.
    """

    from_pretrained = classmethod(_load_checked)

    def __init__(
        self,
        arch: str = "diagonal_bilstm",
        channels: int = 1,
        levels: int = 2,
        height: int = 28,
        width: int = 28,
        factor: int = 2,
        num_classes: int | None = None,
        hidden: int = 16,
        layers: int = 7,
        out_hidden: int = 64,
        skip: bool = True,
        cond_channels: int = 16,
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_positive(factor=factor, cond_channels=cond_channels)
        if factor < 2 or height % factor or width % factor:
            raise ValueError(f"factor must be >= 2 and divide height and width ({height}x{width}), got {factor}")
        self.factor = factor
        shared = {"arch": arch, "channels": channels, "levels": levels, "num_classes": num_classes, "hidden": hidden,
                      "layers": layers, "out_hidden": out_hidden, "skip": skip, "dropout": dropout}
        self.small = PixelRNN(height=height // factor, width=width // factor, **shared)
        self.large = PixelRNN(height=height, width=width, cond_channels=cond_channels, **shared)
        self.upsample = nn.Sequential(
            nn.Conv2d(channels, cond_channels, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(cond_channels, cond_channels, factor, stride=factor),
        )

    def downsample(self, x: Tensor) -> Tensor:
        """The s x s image: every factor-th pixel of (B, C, H, W)."""
        return x[..., :: self.factor, :: self.factor]

    def condition(self, small: Tensor) -> Tensor:
        """Small image (B, C, s, s) -> conditioning map (B, cond_channels, H, W)."""
        return self.upsample(scale_pixels(small, self.large.levels, self.upsample[0].weight.dtype))

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """-> (small logits (B, levels, C, s, s), large logits (B, levels, C, H, W))."""
        small = self.downsample(x)
        return self.small(small, y), self.large(x, y, self.condition(small))

    def open_pixels(self, height: int, width: int, device: torch.device | None = None) -> Tensor:
        """(H, W) bool: the pixels of the full image that the small image does not fix."""
        keep = torch.ones(height, width, dtype=torch.bool, device=device)
        keep[:: self.factor, :: self.factor] = False
        return keep

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x) = log p(small) + log p(open pixels | small) in nats per image, (B,)."""
        small = self.downsample(x)
        keep = self.open_pixels(*x.shape[2:], device=x.device)
        return self.small.log_prob(small, y) + self.large.log_prob(x, y, self.condition(small), keep)


Model = PixelRNN | MultiScalePixelRNN


def build_model(
    arch: str,
    channels: int = 3,
    levels: int = 256,
    height: int = 32,
    width: int = 32,
    num_classes: int | None = None,
    **hparams,
) -> Model:
    """Build a PixelRNN; `layers` defaults to the paper's depth for `arch`.

    Pass `factor=f` for a Multi-Scale PixelRNN whose small image is (H/f, W/f).
    """
    hparams.setdefault("layers", DEFAULT_LAYERS.get(arch, 7))
    cls = MultiScalePixelRNN if "factor" in hparams else PixelRNN
    return cls(arch=arch, channels=channels, levels=levels, height=height, width=width,
               num_classes=num_classes, **hparams)
