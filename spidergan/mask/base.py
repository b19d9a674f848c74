"""What every masker is: a crop (and its record) in, an alpha mask out; and the error a mask
configuration that cannot run raises."""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image


class MaskError(RuntimeError):
    """A mask configuration that cannot run (unknown model, missing file)."""


class Masker:
    """Turns one RGB crop (and its record) into an alpha mask (uint8 HxW, 255 = spider)."""

    name = "base"
    model: Optional[str] = None

    def __call__(self, img: Image.Image, record: dict) -> tuple[np.ndarray, Optional[Image.Image]]:
        """(alpha, foreground colours or None for the crop itself)."""
        raise NotImplementedError


class NoMasker(Masker):
    name = "none"

    def __call__(self, img, record):
        return np.full((img.height, img.width), 255, np.uint8), None
