"""Decoding, checking and normalizing input images with Pillow (imported only when an image is decoded).

The pixel count is read from the header and checked before anything is decoded, so a decompression bomb (a small
file of a huge image) costs a few KB of reading; then the whole image is decoded, so a truncated or corrupt file
fails here and not in the middle of a GPU batch.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from PIL import Image

#: What Pillow names the formats an input may have.
FORMATS = ("PNG", "JPEG", "WEBP")
#: How an input is used, which decides its normalized mode and size.
Role = Literal["image", "mask", "control", "reference"]


@dataclass(frozen=True)
class Probe:
    """What a decoded input is: its format and its size as stored (before EXIF orientation)."""

    format: str
    width: int
    height: int


def decode(data: bytes, *, field: str, max_pixels: int) -> Image.Image:
    """`data` decoded in full; raises `InvalidInputError` on `field` for a non-image, a format other than PNG,
    JPEG or WebP, more than `max_pixels` pixels, or a truncated or corrupt file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns (and past twice its own limit, raises) about bombs; ours is the limit that counts.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidInputError(
                    field,
                    f"the image is {width}×{height} = {width * height} pixels, over the limit of {max_pixels}"
                    " (SDQ_MAX_IMAGE_PIXELS); scale it down",
                )
            if image.format not in FORMATS:
                raise InvalidInputError(field, f"is {image.format or 'of an unknown format'}; send PNG, JPEG or WebP")
            image.load()
    except InvalidInputError:
        raise
    except UnidentifiedImageError:
        raise InvalidInputError(field, "is not an image (PNG, JPEG or WebP) that can be decoded") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInputError(
            field, f"is a decompression bomb: more pixels than {max_pixels} (SDQ_MAX_IMAGE_PIXELS)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInputError(field, f"is corrupt or truncated ({exc})") from None
    return image


def probe(data: bytes, *, field: str, max_pixels: int) -> Probe:
    """Decode `data` as `decode` does and report its format and size, EXIF orientation applied."""
    image = decode(data, field=field, max_pixels=max_pixels)
    width, height = upright_size(image)
    return Probe(format=str(image.format), width=width, height=height)


def normalize(image: Image.Image, *, role: Role, width: int, height: int) -> Image.Image:
    """The image as a pipeline takes it: upright (EXIF), alpha flattened (RGB, or L for a mask), and for every role
    but `reference` scaled to cover `width` × `height` and center-cropped to exactly that size (a multiple of 8,
    as every job size is), so that an image, its mask and its control maps stay aligned pixel for pixel.

    A `reference` is cropped to its central square: all that the IP-Adapter's image encoder sees of it (CLIP's
    processor scales the shorter side to its input size, then center-crops). Left whole, a 16384×1 reference (a
    few hundred bytes, within the pixel limit) would be scaled to 3.7 million × 224 pixels there, some 10 GB."""
    from PIL import Image, ImageOps

    upright = ImageOps.exif_transpose(image)
    if role == "mask":
        # Transparent counts as black (kept): a mask drawn as white strokes on a transparent layer works.
        flat = _flatten(upright, background=(0, 0, 0)).convert("L")
    else:
        flat = _flatten(upright, background=(255, 255, 255))
    if role == "reference":
        side = min(flat.size)
        return ImageOps.fit(flat, (side, side), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return ImageOps.fit(flat, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def encode_png(image: Image.Image) -> bytes:
    """Lossless PNG bytes of a normalized input (what `inputs/<job>/<name>.png` holds)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # speed over size: these are read back within minutes
    return buffer.getvalue()


def upright_size(image: Image.Image) -> tuple[int, int]:
    """Width and height of `image` once its EXIF orientation is applied (orientations 5–8 swap them)."""
    orientation = image.getexif().get(0x0112, 1)
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _flatten(image: Image.Image, *, background: tuple[int, int, int]) -> Image.Image:
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, background)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")
