"""The wire contract: everything that crosses a process boundary.

A `JobRequest` is what a client asks for, a `JobMessage` is what travels through Redis to a worker, and a
`JobRecord` is what the API reports back. All are frozen pydantic models; the worker re-validates every message
on entry, so a producer of another version cannot smuggle in a request this version would refuse.
"""

from __future__ import annotations

import enum
import re
import secrets
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .cost import JobCost

#: Version of the message and record schema. Bump on any incompatible change.
CONTRACT_VERSION: Literal[1] = 1

MIN_SIDE_PX = 64
MAX_SIDE_PX = 2048
#: Largest width × height accepted (1536², e.g. 2048×1152). Peers cap SD 1.5 at 786 432 px; SDXL needs more.
MAX_AREA_PX = 1536 * 1536
MAX_PROMPT_CHARS = 2000
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_IMAGES = 8
MAX_SEED = 2**32 - 1
MAX_METADATA_ITEMS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_LORAS = 4
#: LoRA scales accepted: 1 is the trained strength, 0 is no effect, negative inverts it.
MAX_LORA_SCALE = 4.0

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# A model reference: `tiny`, a hub id (`org/name`, optionally `@revision`), an absolute path on the worker,
# or a storage URL (`s3://…`, `gs://…`, `az://…`, `file://…`). No whitespace or control characters.
_MODEL_REF = re.compile(r"^[A-Za-z0-9][\w.\-/:@+~=]{0,511}$|^/[\w.\-/@+~=]{1,511}$")


class _TextEnum(str, enum.Enum):
    """A string-valued enum that prints as its value (what `enum.StrEnum` does from Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)


class JobStatus(_TextEnum):
    """Where a job is in its life. `queued` → `running` → one of the terminal states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """True once the job can no longer change."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class ErrorCode(_TextEnum):
    """Machine-readable reason a job failed."""

    INVALID_INPUT = "invalid_input"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_LOAD_FAILED = "model_load_failed"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    STORAGE = "storage_error"
    INTERNAL = "internal"


class Scheduler(_TextEnum):
    """Noise schedulers a job may ask for; `default` keeps the one the model ships with."""

    DEFAULT = "default"
    DDIM = "ddim"
    EULER = "euler"
    EULER_ANCESTRAL = "euler_a"
    DPMPP_2M = "dpmpp_2m"
    UNIPC = "unipc"
    PNDM = "pndm"


class WebhookEventType(_TextEnum):
    """What a webhook tells. `job.progress` is throttled and sent only to jobs that ask for it."""

    JOB_STARTED = "job.started"
    JOB_PROGRESS = "job.progress"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELED = "job.canceled"
    BATCH_COMPLETED = "batch.completed"

    @property
    def is_terminal(self) -> bool:
        """True for the one event that ends a job (or a batch): delivered once, retried for about a day."""
        return self not in (WebhookEventType.JOB_STARTED, WebhookEventType.JOB_PROGRESS)


#: Events a job's webhook receives when `webhook_events` is not given: every state change, no progress.
DEFAULT_WEBHOOK_EVENTS = frozenset(
    {
        WebhookEventType.JOB_STARTED,
        WebhookEventType.JOB_SUCCEEDED,
        WebhookEventType.JOB_FAILED,
        WebhookEventType.JOB_CANCELED,
    }
)


class OutputFormat(_TextEnum):
    """Image encodings, with their MIME type and file extension."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def content_type(self) -> str:
        return f"image/{self.value}"

    @property
    def extension(self) -> str:
        return "jpg" if self is OutputFormat.JPEG else self.value


def _multiple_of_8(value: int) -> int:
    if value % 8:
        raise ValueError(f"must be a multiple of 8 (got {value}; try {value // 8 * 8} or {value // 8 * 8 + 8})")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _model_ref(value: str) -> str:
    if not _MODEL_REF.match(value) or ".." in value.split("/"):
        raise ValueError("must be 'tiny', a hub id like 'org/name', an absolute path or a storage URL")
    return value


def _metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_ITEMS:
        raise ValueError(f"at most {MAX_METADATA_ITEMS} entries")
    for key, item in value.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
            raise ValueError(f"keys must be 1–{MAX_METADATA_KEY_CHARS} characters (key {key[:20]!r})")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"values must be at most {MAX_METADATA_VALUE_CHARS} characters (key {key!r})")
    return value


Side = Annotated[int, Field(ge=MIN_SIDE_PX, le=MAX_SIDE_PX), AfterValidator(_multiple_of_8)]


def _lora_name(value: str) -> str:
    if not _MODEL_REF.match(value) or ".." in value.split("/"):
        raise ValueError("must be a LoRA name, a hub id like 'org/name', an absolute path or a storage URL")
    return value


class LoraRequest(BaseModel):
    """One LoRA adapter a job applies: a name in the worker's cache (`my-style`), a hub id, a path or a storage URL,
    and its strength."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Annotated[str, AfterValidator(_lora_name)]
    scale: float = Field(default=1.0, ge=-MAX_LORA_SCALE, le=MAX_LORA_SCALE)


def _unique_loras(value: tuple[LoraRequest, ...]) -> tuple[LoraRequest, ...]:
    names = [lora.name for lora in value]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"each LoRA at most once (repeated: {', '.join(repeated)})")
    return value


class JobRequest(BaseModel):
    """A text-to-image job as a client submits it. Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS), AfterValidator(_not_blank)]
    negative_prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] = ""
    model: Annotated[str | None, AfterValidator(lambda v: v if v is None else _model_ref(v))] = Field(
        default=None, description="Model to run; the server's default model when omitted."
    )
    width: Side = 512
    height: Side = 512
    steps: int = Field(default=30, ge=1, le=MAX_STEPS)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=MAX_GUIDANCE)
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Seed of the first image; image n uses seed + n. Random if omitted.",
    )
    num_images: int = Field(default=1, ge=1, le=MAX_IMAGES)
    scheduler: Scheduler = Scheduler.DEFAULT
    output_format: OutputFormat = OutputFormat.PNG
    webhook_url: Annotated[str | None, Field(max_length=2048, pattern=r"^https?://\S+$")] = Field(
        default=None,
        description="Called with signed Standard Webhooks events as the job changes state (https in production).",
    )
    webhook_events: list[WebhookEventType] | None = Field(
        default=None,
        max_length=8,
        description="Events to send to `webhook_url`; default every state change but `job.progress`.",
    )
    loras: Annotated[tuple[LoraRequest, ...], Field(max_length=MAX_LORAS), AfterValidator(_unique_loras)] = Field(
        default=(), description=f"LoRA adapters applied to the model, each with a scale; at most {MAX_LORAS}."
    )
    metadata: Annotated[dict[str, str], AfterValidator(_metadata)] = Field(default_factory=dict)

    @field_validator("height")
    @classmethod
    def _area(cls, height: int, info: ValidationInfo) -> int:
        # On `height` (validated after `width`) so that the error names a field.
        width = info.data.get("width")
        if width is not None and width * height > MAX_AREA_PX:
            raise ValueError(
                f"width × height must be at most {MAX_AREA_PX} px (got {width}×{height} = {width * height})"
            )
        return height

    @field_validator("webhook_events")
    @classmethod
    def _job_events(cls, events: list[WebhookEventType] | None) -> list[WebhookEventType] | None:
        if events is not None and WebhookEventType.BATCH_COMPLETED in events:
            raise ValueError("batch.completed is sent to a batch's webhook, not a job's")
        return events

    @property
    def wanted_webhook_events(self) -> frozenset[WebhookEventType]:
        """The events this job's webhook receives."""
        return DEFAULT_WEBHOOK_EVENTS if self.webhook_events is None else frozenset(self.webhook_events)

    def resolved(self, default_model: str) -> JobRequest:
        """The request with every server-side default filled in: a concrete model and a recorded seed."""
        seed = self.seed if self.seed is not None else secrets.randbelow(MAX_SEED + 1)
        return self.model_copy(update={"model": self.model or default_model, "seed": seed})


class CheckpointRef(BaseModel):
    """Where an interrupted attempt left a job's denoising state: resume at `step` from the object at `key`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(max_length=1024)
    step: int = Field(ge=0)
    attempt: int = Field(ge=1, description="The attempt that wrote it.")


class JobMessage(BaseModel):
    """What the producer sends through Dramatiq: the job id and its fully resolved request.

    `checkpoint` is set on a message re-sent after a spot hand-off; the job record holds the same pointer (written
    atomically with the fenced hand-off), and the record's is the one a worker resumes from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = CONTRACT_VERSION
    job_id: str
    request: JobRequest
    checkpoint: CheckpointRef | None = None

    @model_validator(mode="after")
    def _resolved(self) -> JobMessage:
        if self.request.model is None or self.request.seed is None:
            raise ValueError("request must be resolved (model and seed set) before it is sent")
        if not is_job_id(self.job_id):
            raise ValueError("job_id must be 32 lowercase hex characters")
        return self


class Progress(BaseModel):
    """Denoising progress of a running job."""

    model_config = ConfigDict(frozen=True)

    step: int
    total: int


class Timings(BaseModel):
    """Where a job's time went, in seconds. `None` for phases that have not happened.

    `queue_wait_s` runs from submission until the GPU started the job's batch; `inference_s` is that batch's
    pipeline call (shared by every job in it).
    """

    model_config = ConfigDict(frozen=True)

    queue_wait_s: float | None = None
    load_s: float | None = None
    inference_s: float | None = None
    encode_s: float | None = None
    upload_s: float | None = None
    #: Images in the pipeline call that rendered this job (its own and those of jobs batched with it).
    batch_size: int | None = None


class Output(BaseModel):
    """One generated image. `url` is a freshly presigned download link, filled in when the record is read."""

    model_config = ConfigDict(frozen=True)

    key: str
    content_type: str
    bytes: int
    width: int
    height: int
    seed: int
    url: str | None = None


class JobError(BaseModel):
    """Why a job failed."""

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str


class JobRecord(BaseModel):
    """A job as the API reports it."""

    model_config = ConfigDict(frozen=True)

    v: Literal[1] = CONTRACT_VERSION
    id: str
    status: JobStatus
    request: JobRequest
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None
    timings: Timings = Field(default_factory=Timings)
    outputs: list[Output] = Field(default_factory=list)
    error: JobError | None = None
    worker: str | None = None
    cancel_requested: bool = False
    warnings: list[str] = Field(default_factory=list)
    tenant: str | None = Field(default=None, description="The tenant of the API key that submitted the job.")
    batch_id: str | None = Field(default=None, description="The batch the job belongs to, if any.")
    checkpoint: CheckpointRef | None = Field(
        default=None, description="Where the job resumes: set when a worker handed it off mid-run (spot notice)."
    )
    handoffs: int = Field(default=0, description="Orderly hand-offs (spot notices); these do not use up attempts.")
    cost: JobCost | None = Field(
        default=None,
        description="What the job cost in USD: its GPU time plus its share of cold starts and idle time (filled in"
        " when read through the API; null until a worker recorded GPU time for it).",
    )


class JobPage(BaseModel):
    """One page of `GET /v1/jobs`; pass `next_cursor` back as `cursor` for the next page."""

    model_config = ConfigDict(frozen=True)

    jobs: list[JobRecord]
    next_cursor: str | None = None


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


def new_job_id() -> str:
    """A fresh, unguessable job id (32 lowercase hex characters)."""
    return uuid.uuid4().hex


def is_job_id(value: str) -> bool:
    """Whether `value` has the shape of a job id (so it is safe to use in a Redis key or an object key)."""
    return bool(_JOB_ID.match(value))


def output_key(job_id: str, index: int, fmt: OutputFormat) -> str:
    """Deterministic object key of image `index` of a job: a retry overwrites instead of duplicating."""
    return f"jobs/{job_id}/{index}.{fmt.extension}"


#: Most jobs one `POST /v1/batches` may carry.
MAX_BATCH_ITEMS = 10_000


class BatchStatus(_TextEnum):
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
    metadata: Annotated[dict[str, str], AfterValidator(_metadata)] = Field(default_factory=dict)
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


class BatchCreated(BatchRecord):
    """The answer to `POST /v1/batches`: the batch plus its job ids, in item order."""

    job_ids: list[str]


class BatchJobPage(BaseModel):
    """A page of a batch's finished jobs, in the order they finished; pass `next_offset` back as `offset`."""

    model_config = ConfigDict(frozen=True)

    jobs: list[JobRecord]
    next_offset: int
