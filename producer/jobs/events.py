"""The body of one webhook delivery."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .enums import CONTRACT_VERSION, WebhookEventType
from .records import JobRecord


class WebhookEvent(BaseModel):
    """The body of one webhook delivery (Standard Webhooks shape: `type`, `timestamp`, `data`).

    `id` equals the `webhook-id` header and stays the same across retries and redeliveries: deduplicate on it.
    `data` is the job record (output URLs not included: read `GET /v1/jobs/{id}` for fresh ones), or the batch.
    """

    model_config = ConfigDict(frozen=True)

    v: Literal[1] = CONTRACT_VERSION
    id: str
    type: WebhookEventType
    timestamp: datetime
    data: JobRecord | dict[str, Any] = Field(union_mode="left_to_right")
