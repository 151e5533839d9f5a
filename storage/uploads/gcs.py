"""GCS uploads as a V4 signed PUT whose signed headers bind the content type and a size range.

`x-goog-content-length-range: 0,<max>` is a signed header, so the client must send it unchanged, and Cloud
Storage refuses a body outside the range; a changed `Content-Type` breaks the signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from storage.uploads.base import PresignedUpload

if TYPE_CHECKING:
    from google.cloud.storage import Blob

#: The header Cloud Storage checks a signed upload's body size against.
LENGTH_RANGE_HEADER = "x-goog-content-length-range"


def signed_put(
    blob: Blob,
    *,
    content_type: str,
    max_bytes: int,
    expires_in_s: int,
    endpoint: str,
    signing: Mapping[str, Any],
) -> PresignedUpload:
    """A V4 PUT URL for `blob`; `signing` holds local credentials or an IAM `signBlob` identity and token."""
    headers = {LENGTH_RANGE_HEADER: f"0,{max_bytes}"}
    url = blob.generate_signed_url(
        version="v4",
        expiration=timedelta(seconds=expires_in_s),
        method="PUT",
        content_type=content_type,
        headers=headers,
        api_access_endpoint=endpoint,
        **signing,
    )
    return PresignedUpload(
        method="PUT",
        url=str(url),
        expires_at=datetime.now(timezone.utc) + timedelta(seconds=expires_in_s),
        max_bytes=max_bytes,
        content_type=content_type,
        headers={"Content-Type": content_type, **headers},
    )
