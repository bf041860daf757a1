"""PixelRNN models: PixelCNN, Row LSTM and Diagonal BiLSTM stacks, and the Multi-Scale PixelRNN.

One class, `PixelRNN`, builds every single-scale architecture of Table 1:
    7x7 mask-A conv -> `layers` residual layers -> ReLU, 1x1 mask B, ReLU, 1x1 mask B -> softmax
Logits are (B, levels, C, H, W): a `levels`-way softmax per sub-pixel (Sec. 5.3).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

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
DEFAULT_LAYERS = {"pixelcnn": 15, "row_lstm": 7, "diagonal_bilstm": 7}  # paper depths on MNIST (Sec. 5)
HUB_TAGS = ["pixelrnn", "image-generation", "autoregressive", "arxiv:1601.06759"]


def scale_pixels(x: Tensor, levels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Integer pixels in [0, levels) -> floats in [-1, 1], the network's input."""
    return x.to(dtype) * (2.0 / (levels - 1)) - 1.0


def bits_per_dim(nats: Tensor | float, dims: int) -> Tensor | float:
    """NLL in nats per image -> bits per sub-pixel: nats / (C*H*W*ln 2)."""
    return nats / (dims * math.log(2))


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _limit(default: Any, most: int) -> Any:
    """A config field with its default and the largest value a checkpoint may ask for (`check_config`): far above
    the paper's models (CIFAR-10: 12 layers, h = 128), far below sizes that take seconds to build or GBs to load."""
    return field(default=default, metadata={"max": most})


@dataclass(frozen=True)
class ModelConfig:
    """Every hyper-parameter of a model, and the one place its default lives; config.json holds these fields.

    arch: "pixelcnn" | "row_lstm" | "diagonal_bilstm"; images of `channels` x `height` x `width` sub-pixels with
    `levels` values each; hidden: h (layers carry 2h features, recurrent states h); layers: residual layers after
    the first (None: the paper's depth, 15 PixelCNN blocks or 7 recurrent layers); out_hidden: the output layers'
    width; skip: skip connections from every layer to the output (Sec. 3.3); num_classes: class-conditional when
    set; factor: a Multi-Scale PixelRNN whose small image is (H/factor, W/factor) (Sec. 3.6); cond_channels: width
    of the conditioning map added as a bias in every layer (None: 16 for Multi-Scale, else 0); small_layers: the
    Multi-Scale small image's model's residual layers (None: `layers`); class_maps: channels of a learned map per
    class, that conditioning map for a class-conditional model (None: a class adds one vector at every pixel).
    """

    arch: str = "diagonal_bilstm"
    channels: int = _limit(1, 4)
    levels: int = _limit(2, 256)
    height: int = _limit(28, 256)
    width: int = _limit(28, 256)
    num_classes: int | None = _limit(None, 10_000)
    hidden: int = _limit(16, 1024)
    layers: int | None = _limit(None, 64)
    out_hidden: int = _limit(64, 4096)
    skip: bool = True
    dropout: float = 0.0
    factor: int | None = _limit(None, 64)
    cond_channels: int | None = _limit(None, 1024)
    small_layers: int | None = _limit(None, 64)
    class_maps: int | None = _limit(None, 64)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.layers is None:
            object.__setattr__(self, "layers", DEFAULT_LAYERS[self.arch])
        if self.cond_channels is None:
            object.__setattr__(self, "cond_channels", 16 if self.factor is not None else 0)
        _check_positive(channels=self.channels, levels=self.levels, height=self.height, width=self.width,
                        hidden=self.hidden, layers=self.layers, out_hidden=self.out_hidden)
        if self.levels < 2:
            raise ValueError(f"levels must be at least 2, got {self.levels}")
        if self.num_classes is not None:
            _check_positive(num_classes=self.num_classes)
        if not isinstance(self.cond_channels, int) or self.cond_channels < 0:
            raise ValueError(f"cond_channels must be a non-negative integer, got {self.cond_channels!r}")
        if not isinstance(self.skip, bool):
            raise TypeError(f"skip must be true or false, got {self.skip!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.hidden < self.channels:
            raise ValueError(f"hidden ({self.hidden}) must be at least channels ({self.channels}) for the colour "
                             "groups")
        if self.small_layers is not None:
            if self.factor is None:
                raise ValueError("small_layers is for a Multi-Scale PixelRNN: set factor too")
            _check_positive(small_layers=self.small_layers)
        if self.class_maps is not None:
            if self.num_classes is None or self.cond_channels or self.factor is not None:
                raise ValueError("class_maps is for a single-scale class-conditional model without a conditioning map")
            _check_positive(class_maps=self.class_maps)
        if self.factor is not None:
            _check_positive(factor=self.factor, cond_channels=self.cond_channels)
            if self.factor < 2 or self.height % self.factor or self.width % self.factor:
                raise ValueError(f"factor must be >= 2 and divide height and width ({self.height}x{self.width}), "
                                 f"got {self.factor}")

    def to_dict(self) -> dict[str, Any]:
        """config.json's contents; `factor`, `small_layers` and `class_maps` only when set, as checkpoints before
        them had."""
        return {k: v for k, v in asdict(self).items()
                if v is not None or k not in ("factor", "small_layers", "class_maps")}

    def too_large(self) -> list[str]:
        """The fields above their limits, as "name = value (at most limit)"."""
        return [f"{f.name} = {getattr(self, f.name)} (at most {f.metadata['max']})" for f in fields(self)
                if "max" in f.metadata and isinstance(getattr(self, f.name), int) and getattr(self, f.name) >
                f.metadata["max"]]


# The paper's models (Sec. 5): h = 16 on MNIST, 128 on CIFAR-10 with 12 recurrent layers; the output layers 64 wide
# for a Bernoulli, 128 per colour for a 256-way softmax.
PRESETS = {
    "binarized_mnist": {"channels": 1, "levels": 2, "height": 28, "width": 28, "hidden": 16, "out_hidden": 64},
    "mnist": {"channels": 1, "levels": 256, "height": 28, "width": 28, "hidden": 16, "out_hidden": 128},
    "cifar10": {"channels": 3, "levels": 256, "height": 32, "width": 32, "hidden": 128, "out_hidden": 384},
}


def paper_config(dataset: str, arch: str, **overrides: Any) -> ModelConfig:
    """The paper's `arch` for `dataset` (a PRESETS key), with `overrides` (fields whose value is None keep the
    preset's)."""
    layers = 12 if dataset == "cifar10" and arch != "pixelcnn" else DEFAULT_LAYERS[arch]
    return ModelConfig(**{"arch": arch, "layers": layers, **PRESETS[dataset],
                          **{k: v for k, v in overrides.items() if v is not None}})


def _config(config: ModelConfig | None, hparams: dict[str, Any]) -> ModelConfig:
    return ModelConfig(**hparams) if config is None else replace(config, **hparams)


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


class PixelRNN(nn.Module, PyTorchModelHubMixin, library_name="pixelrnn", tags=HUB_TAGS, license="mit"):
    """A single-scale PixelRNN / PixelCNN over `channels` x `height` x `width` images: `PixelRNN(config)` or
    `PixelRNN(**fields)` with the fields of `ModelConfig` (a conditioning map of `cond_channels` is the large
    model's of the Multi-Scale PixelRNN, Sec. 3.6)."""

    from_pretrained = classmethod(_load_checked)

    def __init__(self, config: ModelConfig | None = None, **hparams: Any):
        super().__init__()
        self.config = config = _config(config, hparams)
        if config.factor is not None:
            raise ValueError("a config with a factor is a Multi-Scale PixelRNN: build it with MultiScalePixelRNN")
        self._hub_mixin_config = config.to_dict()  # what save_pretrained writes to config.json: every field
        arch, channels, levels, hidden = config.arch, config.channels, config.levels, config.hidden
        num_classes, cond_channels, dropout = config.num_classes, config.cond_channels, config.dropout
        layers = config.layers
        self.arch, self.channels, self.levels = arch, channels, levels
        self.height, self.width, self.num_classes = config.height, config.width, num_classes
        self.hidden, self.skip, self.cond_channels, self.dropout = hidden, config.skip, cond_channels, dropout

        # location-dependent class conditioning (Conditional PixelCNN, van den Oord et al. 2016b, Sec. 2.3): each
        # class's learned map is the conditioning map every layer's bias projects
        self.class_maps = (nn.Parameter(torch.zeros(num_classes, config.class_maps, config.height, config.width))
                           if config.class_maps else None)
        cond_channels = cond_channels or config.class_maps or 0
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
        if config.skip:
            self.skips = nn.ModuleList(MaskedConv2d(groups, groups, (1, 1), "B") for _ in range(layers))
        out_groups = channel_groups(config.out_hidden, channels)
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

    def conditioning(self, y: Tensor | None, cond: Tensor | None) -> Tensor | None:
        """The conditioning map that every layer's bias projects: the one given (the Multi-Scale large model's), or
        with class maps each image's class's, (B, class_maps, H, W)."""
        return self.class_maps[y] if self.class_maps is not None else cond

    def forward(self, x: Tensor, y: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) integer levels -> logits (B, levels, C, H, W)."""
        if not (x.is_cuda and torch.cuda.is_current_stream_capturing()):  # checks sync; a CUDA graph cannot
            self.check_inputs(x, y, cond)
        return self.forward_scaled(scale_pixels(x, self.levels, self.input_conv.weight.dtype), y, cond)

    def forward_scaled(self, inputs: Tensor, y: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """`forward` on inputs already scaled to [-1, 1] (B, C, H, W), unchecked: a relaxed, differentiable
        input for maps of what each prediction depends on (pixelrnn.views)."""
        cond = self.conditioning(y, cond)
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

    def __init__(self, config: ModelConfig | None = None, **hparams: Any):
        super().__init__()
        self.config = config = _config(config, hparams)
        if config.factor is None:
            raise ValueError("a Multi-Scale PixelRNN needs a factor (e.g. 2)")
        self._hub_mixin_config = config.to_dict()
        self.factor, channels, cond_channels = config.factor, config.channels, config.cond_channels
        self.small = PixelRNN(replace(config, height=config.height // self.factor, width=config.width // self.factor,
                                      layers=config.small_layers or config.layers, factor=None, small_layers=None,
                                      cond_channels=0))
        self.large = PixelRNN(replace(config, factor=None, small_layers=None))
        self.upsample = nn.Sequential(
            nn.Conv2d(channels, cond_channels, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(cond_channels, cond_channels, self.factor, stride=self.factor),
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


def build_model(*args: Any, **hparams: Any) -> Model:
    """The model of a `ModelConfig`, or of `ModelConfig(*args, **hparams)` (positionally: arch, channels, levels,
    height, width, num_classes): a Multi-Scale PixelRNN when `factor` is set, else a PixelRNN."""
    if len(args) == 1 and isinstance(args[0], ModelConfig):
        config = replace(args[0], **hparams)
    else:
        config = ModelConfig(*args, **hparams)
    return (PixelRNN if config.factor is None else MultiScalePixelRNN)(config)
