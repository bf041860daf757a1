"""`Studio`: the app's endpoints, one mixin per tab."""

from __future__ import annotations

import numpy as np

from pixelrnn.ui.cards import model_card
from pixelrnn.ui.compress_tab import CompressTab
from pixelrnn.ui.errors import user_errors
from pixelrnn.ui.inspect_tab import InspectTab
from pixelrnn.ui.sampling import SamplingTabs
from pixelrnn.ui.settings import ASSETS_DIR


class Studio(SamplingTabs, InspectTab, CompressTab):
    """The app's endpoints as methods over a Registry, one mixin per tab; generators stream their outputs."""

    # -- Models --
    @user_errors
    def model_card(self, model_name: str) -> tuple[str, np.ndarray | None, np.ndarray | None]:
        """(markdown card, samples image, learning curve) of a model."""
        return model_card(self.registry, model_name)


def stopped() -> str:
    """Status shown when the Stop button cancels a stream."""
    return "Stopped."


def example_images() -> list[str]:
    """Example images shipped in assets/ (screenshots excluded)."""
    if not ASSETS_DIR.is_dir():
        return []
    return [str(p) for p in sorted(ASSETS_DIR.glob("*.png")) if not p.name.startswith("screenshot")]
