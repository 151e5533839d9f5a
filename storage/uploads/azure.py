"""Azure uploads as a SAS for one blob with create and write permission, sent with `x-ms-blob-type: BlockBlob`.

A SAS can bind the blob, the permissions and the time, not the size or the type: Azure accepts any body up to its
own blob limits, so the reader checks an uploaded blob's size before fetching it (`enforces_size=False`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from storage.uploads.base import PresignedUpload


def write_sas(
    blob_url: str,
    account: str,
    container: str,
    full_key: str,
    *,
    content_type: str,
    max_bytes: int,
    start: datetime,
    expiry: datetime,
    signing: Mapping[str, Any],
) -> PresignedUpload:
    """A PUT grant on `full_key` alone until `expiry`; `signing` holds the account key or a user-delegation key."""
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    sas = generate_blob_sas(
        account,
        container,
        full_key,
        permission=BlobSasPermissions(create=True, write=True),
        start=start,
        expiry=expiry,
        **signing,
    )
    return PresignedUpload(
        method="PUT",
        url=f"{blob_url}?{sas}",
        expires_at=expiry,
        max_bytes=max_bytes,
        content_type=content_type,
        headers={"x-ms-blob-type": "BlockBlob", "Content-Type": content_type},
        enforces_size=False,
    )
