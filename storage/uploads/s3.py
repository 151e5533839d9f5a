"""S3 uploads as a SigV4 POST policy: unlike a presigned PUT, the policy makes S3 itself refuse a body over the
size limit (`content-length-range`), another key, another content type, or a form sent after the expiry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from storage.uploads.base import PresignedUpload

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def presign_post(
    client: S3Client, bucket: str, full_key: str, *, content_type: str, max_bytes: int, expires_in_s: int
) -> PresignedUpload:
    """The form that writes `bucket/full_key` once: its fields, then the file as the last part."""
    post = client.generate_presigned_post(
        bucket,
        full_key,
        Fields={"Content-Type": content_type},
        # boto3 adds the bucket and key conditions itself; these bind the type and bound the size.
        Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
        ExpiresIn=expires_in_s,
    )
    return PresignedUpload(
        method="POST",
        url=post["url"],
        expires_at=datetime.now(timezone.utc) + timedelta(seconds=expires_in_s),
        max_bytes=max_bytes,
        content_type=content_type,
        fields=dict(post["fields"]),
    )
