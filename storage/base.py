"""The storage capabilities sdqueue calls: one small protocol each."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol, TypeAlias, runtime_checkable

from storage.errors import ObjectTooLargeError

#: Default lifetime of a presigned URL.
DEFAULT_EXPIRY = timedelta(hours=1)
#: Longest lifetime any backend may sign for (S3 SigV4, GCS V4 and Azure user-delegation keys cap at 7 days).
MAX_EXPIRY = timedelta(days=7)
#: Objects larger than this go up in parts (S3 multipart, Azure blocks, GCS resumable chunks).
MULTIPART_THRESHOLD_BYTES = 8 * 1024 * 1024

#: What `put` stores: bytes, a binary file open for reading (read from its current position), or a file's path.
PutData: TypeAlias = bytes | BinaryIO | Path


@dataclass(frozen=True)
class ObjectInfo:
    """What `head` and `put` report about one stored object."""

    key: str
    size: int
    content_type: str | None = None
    etag: str | None = None
    last_modified: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_disposition: str | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """Put, get, inspect and delete objects by key, relative to the store's root (bucket + prefix)."""

    url: str

    def put(
        self,
        key: str,
        data: PutData,
        *,
        content_type: str,
        content_disposition: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `data` under `key`, replacing any object there, checking integrity; returns what was stored."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises `ObjectNotFoundError` when there are none."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Size, type and metadata of `key`; raises `ObjectNotFoundError` when absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; deleting an absent key is not an error."""
        ...


@runtime_checkable
class BoundedReader(Protocol):
    """A backend that reads an object only if it is small enough, in one request (see `get_at_most`)."""

    def get_at_most(self, key: str, max_bytes: int) -> bytes:
        """The bytes under `key` if there are at most `max_bytes`; else `ObjectTooLargeError` (with the object's
        size), having read at most a bounded first part; `ObjectNotFoundError` when absent."""
        ...


def get_at_most(store: ObjectStore, key: str, max_bytes: int) -> bytes:
    """The bytes under `key` if there are at most `max_bytes`, else `ObjectTooLargeError`: for objects nobody
    bounded when they were written (an Azure SAS cannot cap an upload's size). One request on a `BoundedReader`
    (S3, Azure, local files); a `head` first, then a `get`, on any other store."""
    if isinstance(store, BoundedReader):
        return store.get_at_most(key, max_bytes)
    size = store.head(key).size
    if size > max_bytes:
        raise ObjectTooLargeError(key, size, max_bytes)
    data = store.get(key)
    if len(data) > max_bytes:  # replaced between the two requests
        raise ObjectTooLargeError(key, len(data), max_bytes)
    return data


@runtime_checkable
class Presigner(Protocol):
    """Mint time-limited GET URLs for single objects."""

    def presign_get(self, key: str, *, expires_in: timedelta = DEFAULT_EXPIRY) -> str:
        """A URL that lets anyone holding it GET `key` until it expires.

        Raises `InvalidExpiryError` when `expires_in` is not positive or exceeds `MAX_EXPIRY`.
        """
        ...


@runtime_checkable
class Lister(Protocol):
    """Enumerate objects and stream them to files: what downloading a whole prefix needs."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix` (a plain string prefix, like S3's), in key order.

        Listed infos carry key, size, etag and last_modified; type and metadata need a `head`.
        """
        ...

    def get_into(self, key: str, file: BinaryIO) -> int:
        """Write the bytes of `key` into `file` (in parts for large objects); returns how many were written."""
        ...
