"""PixelRNN Studio: Pixel Recurrent Neural Networks (van den Oord et al., 2016) in PyTorch."""

from pixelrnn.model import ARCHS, Model, MultiScalePixelRNN, PixelRNN, bits_per_dim, build_model

__all__ = ["ARCHS", "Model", "MultiScalePixelRNN", "PixelRNN", "bits_per_dim", "build_model"]
