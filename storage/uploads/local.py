"""Local uploads: a `LinkSigner` PUT link to the API's file route, which checks the signature, the signed content
type and the byte limit before it writes the object."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from storage.signing import LinkSigner
from storage.uploads.base import PresignedUpload


def signed_put(
    signer: LinkSigner, key: str, *, content_type: str, max_bytes: int, expires_in: timedelta
) -> PresignedUpload:
    """A PUT link for `key` on the API that serves the local store."""
    now = datetime.now(timezone.utc)
    url = signer.sign_upload(
        key, content_type=content_type, max_bytes=max_bytes, expires_in=expires_in, now=now.timestamp()
    )
    # The link expires at the whole second `sign_upload` signed, so report that one.
    expires_at = datetime.fromtimestamp(int(now.timestamp()) + int(expires_in.total_seconds()), tz=timezone.utc)
    return PresignedUpload(
        method="PUT",
        url=url,
        expires_at=expires_at,
        max_bytes=max_bytes,
        content_type=content_type,
        headers={"Content-Type": content_type},
    )
