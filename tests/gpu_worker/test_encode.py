"""Image encoding: each format decodes back to the same size, and output is byte-stable."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gpu_worker.encode import encode_image
from producer.jobs import OutputFormat

PILLOW_NAMES = {OutputFormat.PNG: "PNG", OutputFormat.JPEG: "JPEG", OutputFormat.WEBP: "WEBP"}


def _image(width: int = 96, height: int = 64, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
    return Image.fromarray(pixels, mode)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_decodes_back_to_the_same_size_and_format(fmt: OutputFormat) -> None:
    data = encode_image(_image(), fmt)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == PILLOW_NAMES[fmt]
    assert decoded.size == (96, 64)
    assert decoded.mode == "RGB"


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_same_pixels_same_bytes(fmt: OutputFormat) -> None:
    assert encode_image(_image(), fmt) == encode_image(_image(), fmt)


def test_png_is_lossless() -> None:
    image = _image()
    decoded = Image.open(io.BytesIO(encode_image(image, OutputFormat.PNG)))
    assert decoded.tobytes() == image.tobytes()


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_metadata_is_dropped_and_the_callers_image_is_untouched(fmt: OutputFormat) -> None:
    tagged = _image()
    tagged.info = {"icc_profile": b"not a real profile", "comment": b"hello"}
    assert encode_image(tagged, fmt) == encode_image(_image(), fmt)
    assert tagged.info["comment"] == b"hello"


def test_rgba_is_encoded_as_rgb() -> None:
    decoded = Image.open(io.BytesIO(encode_image(_image(mode="RGBA"), OutputFormat.JPEG)))
    assert decoded.mode == "RGB"
