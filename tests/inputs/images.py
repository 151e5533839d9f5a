"""Input images for the tests, made on the spot: ordinary ones, a decompression bomb, truncated files."""

from __future__ import annotations

import base64
import io
import struct
import zlib

from PIL import Image


def png(width: int = 64, height: int = 64, color: tuple[int, ...] = (200, 30, 30), mode: str = "RGB") -> bytes:
    """A plain PNG of one color."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def gradient_png(width: int = 64, height: int = 64) -> bytes:
    """A PNG whose pixels differ (so that truncating it loses real data, and crops are visible)."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 255 // width, y * 255 // height, (x + y) % 256) for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(width: int = 256, height: int = 256, seed: int = 0) -> bytes:
    """A PNG of random pixels: it does not compress, so its size is about width × height × 3 bytes."""
    import random

    noise = random.Random(seed).randbytes(width * height * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), noise).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(side: int = 60_000) -> bytes:
    """A PNG of a few hundred bytes whose header claims `side`² pixels (1 bit each): decoding it would take
    gigabytes. Its one IDAT chunk holds a few rows; no decoder should ever get that far."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    rows = zlib.compress(b"\x00" * (1 + side // 8) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    """`data` cut short, as an interrupted transfer leaves it."""
    return data[: int(len(data) * keep)]


def data_url(data: bytes, content_type: str = "image/png") -> str:
    """`data` as a data URL."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
