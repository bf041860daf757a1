"""PixelRNN Studio: Pixel Recurrent Neural Networks (van den Oord et al., 2016) in PyTorch."""

from pixelrnn import views
from pixelrnn.images import load_image
from pixelrnn.model import ARCHS, Model, MultiScalePixelRNN, PixelRNN, bits_per_dim, build_model
from pixelrnn.sampling import (
    SampleRequest,
    Step,
    class_posterior,
    likelihood_maps,
    sample,
    sample_batch_steps,
    sample_steps,
)

_HUB_NAMES = ("CheckpointError", "HubUnreachableError", "load")


def __getattr__(name: str):
    """pixelrnn.load & co. come from pixelrnn.hub, imported on first use so that
    `python -m pixelrnn.hub` does not find the module already imported."""
    if name in _HUB_NAMES:
        from pixelrnn import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'pixelrnn' has no attribute {name!r}")


__all__ = [
    "ARCHS",
    "CheckpointError",
    "HubUnreachableError",
    "Model",
    "MultiScalePixelRNN",
    "PixelRNN",
    "SampleRequest",
    "Step",
    "bits_per_dim",
    "build_model",
    "class_posterior",
    "likelihood_maps",
    "load",
    "load_image",
    "sample",
    "sample_batch_steps",
    "sample_steps",
    "views",
]
