"""An upload as `POST /v1/uploads` takes and answers it: how to send an image straight to storage."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .enums import CONTRACT_VERSION
from .inputs import ImageRef

ImageContentType = Literal["image/png", "image/jpeg", "image/webp"]


class UploadRequest(BaseModel):
    """What will be uploaded: its type (storage binds it where it can)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    content_type: ImageContentType = "image/png"


class UploadCreated(BaseModel):
    """An upload id and the grant to send its bytes: `PUT` them to `url` with `headers`, or, when `method` is
    `POST` (S3), send a multipart form of `fields` with the file last, as the part named `file`. Then use
    `image` (`{"upload": id}`) in jobs until `usable_until`. Send no `Authorization` header to storage."""

    model_config = ConfigDict(frozen=True)

    v: Literal[1] = CONTRACT_VERSION
    id: str
    image: ImageRef = Field(description='What to put in a job: {"upload": "<id>"}.')
    method: Literal["PUT", "POST"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict, description="Headers to send with a PUT, unchanged.")
    fields: dict[str, str] = Field(default_factory=dict, description="Form fields to send before the file (POST).")
    content_type: ImageContentType
    max_bytes: int = Field(description="Largest body storage (or, where it cannot enforce it, the job) accepts.")
    expires_at: datetime = Field(description="When `url` stops working.")
    usable_until: datetime = Field(description="When jobs can no longer be submitted with this upload id.")
