"""What `put` uploads, seen the same way by every backend: small bytes in one request, the rest as a stream."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage.base import PutData
from storage.errors import StorageError


@dataclass(frozen=True)
class Body:
    """An upload: `data` when it is small bytes, else `file` (with `size` when known) to stream in parts."""

    data: bytes | None
    file: BinaryIO | None
    size: int | None

    @property
    def md5_b64(self) -> str | None:
        """Base64 MD5 of small bytes (S3's Content-MD5, Azure's blob MD5); None for streams, checked per part."""
        if self.data is None:
            return None
        return base64.b64encode(md5_digest(self.data)).decode("ascii")


def md5_digest(data: bytes) -> bytes:
    """MD5 of `data`, as an integrity check (not for security)."""
    return hashlib.md5(data, usedforsecurity=False).digest()


@contextmanager
def open_body(data: PutData, *, threshold_bytes: int) -> Iterator[Body]:
    """`data` as a `Body`: bytes up to `threshold_bytes` stay bytes; larger bytes, paths and files stream.

    A path is opened here and closed afterwards; an open file is read from its current position and left open.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) <= threshold_bytes:
            yield Body(raw, None, len(raw))
        else:
            yield Body(None, io.BytesIO(raw), len(raw))
        return
    if isinstance(data, os.PathLike):
        try:
            file = open(Path(data), "rb")  # noqa: SIM115  # closed below, after the backend has streamed it
        except OSError as exc:
            raise StorageError(f"cannot read the file to upload: {exc}") from exc
        with file:
            yield Body(None, file, os.fstat(file.fileno()).st_size)
        return
    if not hasattr(data, "read"):
        raise TypeError(f"put() takes bytes, a binary file or a Path; got {type(data).__name__}")
    yield Body(None, data, _remaining(data))


def _remaining(file: BinaryIO) -> int | None:
    try:
        if not file.seekable():
            return None
        start = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(start)
        return end - start
    except (OSError, ValueError):
        return None
