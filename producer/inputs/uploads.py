"""Uploads: an id per image a client sends straight to storage, owned by its tenant and usable for a while.

`POST /v1/uploads` records the id in Redis (with the upload TTL) and hands out a presigned grant to write
`uploads/<id>` in the job storage. Submitting a job with `{"upload": id}` checks that the id is the caller
tenant's and that its bytes arrived; an id of another tenant reads exactly like an unknown one. The object outlives
the record (a lifecycle rule on `uploads/` deletes it), so a job queued before the id expired still finds it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis

from storage import ObjectInfo, ObjectStore, UploadSigner

from .. import keys
from ..jobs import ImageContentType, ImageRef, UploadCreated, upload_object_key
from .limits import InputLimits

#: The tenant an upload of open mode (no API keys) belongs to.
_OPEN = "-"


@dataclass(frozen=True)
class UploadInfo:
    """What Redis holds of an upload that exists and belongs to the asking tenant."""

    id: str
    content_type: str
    max_bytes: int


class Uploads:
    """Creates uploads, tells whose they are, and reads their bytes."""

    def __init__(self, client: redis.Redis, objects: ObjectStore, limits: InputLimits) -> None:
        self.client = client
        self.objects = objects
        self.limits = limits

    def create(self, tenant: str | None, content_type: ImageContentType) -> UploadCreated:
        """A new upload id for `tenant` and the grant to send its bytes (raises `storage.NotSupportedError` for a
        store that cannot presign uploads)."""
        if not isinstance(self.objects, UploadSigner):
            from storage import NotSupportedError

            raise NotSupportedError(f"{self.objects!r} cannot presign uploads")
        upload_id = uuid.uuid4().hex
        grant = self.objects.presign_upload(
            upload_object_key(upload_id),
            content_type=content_type,
            max_bytes=self.limits.max_upload_bytes,
            expires_in=timedelta(seconds=self.limits.upload_url_expiry_s),
        )
        usable_until = self._record(upload_id, tenant, content_type)
        return UploadCreated(
            id=upload_id,
            image=ImageRef(upload=upload_id),
            method=grant.method,
            url=grant.url,
            headers=dict(grant.headers),
            fields=dict(grant.fields),
            content_type=content_type,
            max_bytes=grant.max_bytes,
            expires_at=grant.expires_at,
            usable_until=usable_until,
        )

    def store_inline(self, tenant: str | None, content_type: str, data: bytes) -> str:
        """Store the bytes of a data URL as an upload of `tenant`; returns its id, which the content decides (so a
        retried submission, idempotency key and all, records the same request, and a repeated image is kept once)."""
        digest = hashlib.sha256(f"{tenant or _OPEN}\0".encode() + data).hexdigest()
        upload_id = digest[:32]
        if self.owned(upload_id, tenant) is None:
            self.objects.put(upload_object_key(upload_id), data, content_type=content_type)
        self._record(upload_id, tenant, content_type)
        return upload_id

    def owned(self, upload_id: str, tenant: str | None) -> UploadInfo | None:
        """The upload, if it exists, has not expired and belongs to `tenant`; None otherwise (never telling which)."""
        raw: dict[bytes, bytes] = self.client.hgetall(keys.upload(upload_id))  # type: ignore[assignment]
        if raw.get(b"tenant", b"").decode() != (tenant or _OPEN):
            return None
        return UploadInfo(
            id=upload_id,
            content_type=raw.get(b"content_type", b"").decode(),
            max_bytes=int(raw.get(b"max_bytes", b"0")),
        )

    def head(self, upload_id: str) -> ObjectInfo:
        """The uploaded object's info; raises `storage.ObjectNotFoundError` while its bytes have not arrived."""
        return self.objects.head(upload_object_key(upload_id))

    def read(self, upload_id: str) -> bytes:
        """The uploaded bytes; raises `storage.ObjectNotFoundError` while they have not arrived."""
        return self.objects.get(upload_object_key(upload_id))

    def remember_probe(self, upload_id: str, etag: str, width: int, height: int) -> None:
        """Cache the decoded size of one version (etag) of an upload, so further jobs skip reading it."""
        self.client.hset(keys.upload(upload_id), mapping={"etag": etag, "width": width, "height": height})

    def probed(self, upload_id: str, etag: str | None) -> tuple[int, int] | None:
        """The cached size of this version of the upload, if it was decoded before."""
        if not etag:
            return None
        found: list[bytes | None] = self.client.hmget(keys.upload(upload_id), ["etag", "width", "height"])  # type: ignore[assignment]
        stored, width, height = found
        if stored is None or stored.decode() != etag or width is None or height is None:
            return None
        return int(width), int(height)

    def _record(self, upload_id: str, tenant: str | None, content_type: str) -> datetime:
        ttl_s = self.limits.upload_ttl_s
        fields = {
            "tenant": tenant or _OPEN,
            "content_type": content_type,
            "max_bytes": str(self.limits.max_upload_bytes),
            "created_at": repr(time.time()),
        }
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.upload(upload_id), mapping=fields)  # type: ignore[arg-type]  # redis-py: invariant Mapping
            pipe.expire(keys.upload(upload_id), ttl_s)
            pipe.execute()
        return datetime.now(timezone.utc) + timedelta(seconds=ttl_s)
