"""Canny edges, computed on the worker from an ordinary photo, for ControlNets trained on edge maps.

OpenCV is not a dependency: kornia's `filters.canny` (pure torch: Gaussian blur, Sobel gradients, non-maximum
suppression, hysteresis) does the same steps. Its thresholds apply to the gradient magnitude of an image in [0, 1];
its defaults (0.1, 0.2) pick out about the edges OpenCV's customary 100/200 on 0-255 do. The map is white edges on
black, RGB, the layout the Canny ControlNets were trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

LOW_THRESHOLD = 0.1
HIGH_THRESHOLD = 0.2


def canny(image: Image.Image, *, low: float = LOW_THRESHOLD, high: float = HIGH_THRESHOLD) -> Image.Image:
    """The Canny edge map of `image`, same size, RGB with white edges on black."""
    import numpy as np
    import torch
    from kornia.filters import canny as kornia_canny
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    with torch.no_grad():
        _, edges = kornia_canny(tensor, low_threshold=low, high_threshold=high)
    mask = (edges[0, 0] > 0.5).numpy().astype(np.uint8) * 255
    return Image.fromarray(mask, "L").convert("RGB")
