"""Input images for the image-mode tests: deterministic photos, masks and control maps at the tiny models' size."""

from __future__ import annotations

import numpy as np
from PIL import Image

SIDE = 64


def photo(seed: int = 0, side: int = SIDE) -> Image.Image:
    """A smooth, colourful stand-in for a photo (gradients plus a little noise), RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    channels = [np.sin(6 * x + seed) * 0.5 + 0.5, np.cos(4 * y - seed) * 0.5 + 0.5, (x + y) / 2]
    pixels = np.stack(channels, axis=-1) * 200 + rng.uniform(0, 55, (side, side, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def square_mask(side: int = SIDE, box: tuple[int, int, int, int] = (16, 16, 48, 48)) -> Image.Image:
    """A mask (mode L) that is white (repaint) inside `box` and black (keep) elsewhere."""
    mask = Image.new("L", (side, side), 0)
    mask.paste(255, box)
    return mask


def half_white(vertical: bool, side: int = SIDE) -> Image.Image:
    """A control map: white on the left half (`vertical`) or the top half, black elsewhere."""
    image = Image.new("RGB", (side, side))
    image.paste((255, 255, 255), (0, 0, side // 2, side) if vertical else (0, 0, side, side // 2))
    return image


def pixels(image: Image.Image) -> np.ndarray:
    """`image` as signed integers, for differences."""
    return np.asarray(image, dtype=np.int16)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute pixel difference (0-255)."""
    return float(np.abs(pixels(a) - pixels(b)).mean())
