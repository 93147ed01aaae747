"""Stimulus images as the decoder sees them: float32 [3, size, size] in [0, 1], centre-cropped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def image_to_array(img: Any, size: int) -> np.ndarray:
    """A PIL image or uint8 [H, W, 3] -> float32 [3, size, size] in [0, 1].

    Non-square images are centre-cropped to a square first; resizing is Pillow bilinear, which
    filters over the whole source footprint when downscaling (area-like, no aliasing).
    """
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8))
    img = img.convert("RGB")
    w, h = img.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()


def resize_images(images: np.ndarray | Iterable[Any], size: int) -> np.ndarray:
    """uint8 [K, H, W, 3] (or PIL images) -> float32 [K, 3, size, size] in [0, 1]."""
    arrs = [image_to_array(im, size) for im in images]
    if not arrs:
        return np.zeros((0, 3, size, size), dtype=np.float32)
    return np.stack(arrs).astype(np.float32)
