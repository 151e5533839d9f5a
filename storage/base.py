"""The storage capabilities sdqueue calls: one small protocol each."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

#: Default lifetime of a presigned URL.
DEFAULT_EXPIRY = timedelta(hours=1)
#: Longest lifetime any backend may sign for (S3 SigV4, GCS V4 and Azure user-delegation keys cap at 7 days).
MAX_EXPIRY = timedelta(days=7)


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
        data: bytes,
        *,
        content_type: str,
        content_disposition: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `data` under `key`, replacing any object there; returns what was stored."""
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
class Presigner(Protocol):
    """Mint time-limited GET URLs for single objects."""

    def presign_get(self, key: str, *, expires_in: timedelta = DEFAULT_EXPIRY) -> str:
        """A URL that lets anyone holding it GET `key` until it expires.

        Raises `InvalidExpiryError` when `expires_in` is not positive or exceeds `MAX_EXPIRY`.
        """
        ...
