"""A submitted batch: what `POST /v1/batches` takes and what batch reads return."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .enums import CONTRACT_VERSION, TextEnum
from .records import Eta, JobRecord
from .requests import validated_metadata

#: Most jobs one `POST /v1/batches` may carry.
MAX_BATCH_ITEMS = 10_000


class BatchStatus(TextEnum):
    """A batch is `running` until every one of its jobs is terminal, then `completed`."""

    RUNNING = "running"
    COMPLETED = "completed"


class BatchRequest(BaseModel):
    """A batch as a JSON object: items (job requests, each may omit what `defaults` gives) plus shared defaults.

    `POST /v1/batches` also takes a bare JSON array of items, or JSON Lines (`application/x-ndjson`) whose first
    line may be `{"defaults": {...}}`. Every item is validated as a `JobRequest` (defaults merged under it) before
    anything is enqueued.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
    defaults: dict[str, Any] = Field(default_factory=dict, description="JobRequest fields every item inherits.")
    metadata: Annotated[dict[str, str], AfterValidator(validated_metadata)] = Field(default_factory=dict)
    webhook_url: Annotated[str | None, Field(max_length=2048, pattern=r"^https?://\S+$")] = Field(
        default=None, description="Gets one signed `batch.completed` event when the batch's last job ends."
    )


class BatchCounts(BaseModel):
    """How many of a batch's jobs are in each status."""

    model_config = ConfigDict(frozen=True)

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0


class BatchRecord(BaseModel):
    """A batch as the API reports it: counts by status, progress and the cost of its finished jobs so far."""

    model_config = ConfigDict(frozen=True)

    v: Literal[1] = CONTRACT_VERSION
    id: str
    status: BatchStatus
    total: int
    counts: BatchCounts
    progress: float = Field(description="Share of the batch's jobs that are terminal, 0–1.")
    cost_usd: float | None = Field(default=None, description="GPU cost of the batch's jobs so far, when known.")
    created_at: datetime
    cancel_requested: bool = False
    tenant: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    eta_s: Eta | None = Field(
        default=None,
        description="Until the batch is done: `finish`, seconds until its last job should finish, from the fleet's"
        " recent throughput (null with a reason when there is no estimate, e.g. no workers yet).",
    )


class BatchCreated(BatchRecord):
    """The answer to `POST /v1/batches`: the batch plus its job ids, in item order."""

    job_ids: list[str]


class BatchJobPage(BaseModel):
    """A page of a batch's finished jobs, in the order they finished; pass `next_offset` back as `offset`."""

    model_config = ConfigDict(frozen=True)

    jobs: list[JobRecord]
    next_offset: int
