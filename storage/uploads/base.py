"""Presigned uploads: a client sends one object's bytes straight to storage, never through the API.

Signing an upload is its own capability (`UploadSigner`), beside `Presigner` for downloads. What each backend can
enforce differs, and `PresignedUpload` says so: S3 (a POST policy) and GCS (a signed `x-goog-content-length-range`)
refuse a body over `max_bytes` themselves, as does the local store's signed PUT route; an Azure SAS cannot limit
size or type, so whoever reads the object checks its size first (`enforces_size` is False there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

#: Default lifetime of a presigned upload: long enough to send a photo, short enough that a leaked URL is stale.
DEFAULT_UPLOAD_EXPIRY = timedelta(minutes=15)


@dataclass(frozen=True)
class PresignedUpload:
    """How to send one object: `PUT` the bytes to `url` with `headers`, or (S3's policy form) `POST` a multipart
    form of `fields` followed by the file as the last part, named `file`."""

    method: Literal["PUT", "POST"]
    url: str
    expires_at: datetime
    max_bytes: int
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)
    #: Whether storage itself refuses a body over `max_bytes` (an Azure SAS cannot).
    enforces_size: bool = True


@runtime_checkable
class UploadSigner(Protocol):
    """Mint time-limited grants to write one object."""

    def presign_upload(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: timedelta = DEFAULT_UPLOAD_EXPIRY
    ) -> PresignedUpload:
        """A grant that lets anyone holding it write `key` once with a body of `content_type`, at most `max_bytes`
        long, until it expires. Raises `InvalidExpiryError` for an expiry outside 1 s – `MAX_EXPIRY`."""
        ...
