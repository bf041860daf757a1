"""PixelRNN Studio: Pixel Recurrent Neural Networks (van den Oord et al., 2016) in PyTorch."""

from pixelrnn.hub import CheckpointError, HubUnreachableError, load
from pixelrnn.model import ARCHS, Model, MultiScalePixelRNN, PixelRNN, bits_per_dim, build_model
from pixelrnn.sampling import Step, likelihood_maps, sample, sample_steps

__all__ = [
    "ARCHS",
    "CheckpointError",
    "HubUnreachableError",
    "Model",
    "MultiScalePixelRNN",
    "PixelRNN",
    "Step",
    "bits_per_dim",
    "build_model",
    "likelihood_maps",
    "load",
    "sample",
    "sample_steps",
]
