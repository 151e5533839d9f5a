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
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

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
    webhook_url: Annotated[str | None, Field(max_length=2048, pattern=r"^https?://\S+$")] = None
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

    def resolved(self, default_model: str) -> JobRequest:
        """The request with every server-side default filled in: a concrete model and a recorded seed."""
        seed = self.seed if self.seed is not None else secrets.randbelow(MAX_SEED + 1)
        return self.model_copy(update={"model": self.model or default_model, "seed": seed})


class JobMessage(BaseModel):
    """What the producer sends through Dramatiq: the job id and its fully resolved request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = CONTRACT_VERSION
    job_id: str
    request: JobRequest

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
    """Where a job's time went, in seconds. `None` for phases that have not happened."""

    model_config = ConfigDict(frozen=True)

    queue_wait_s: float | None = None
    load_s: float | None = None
    inference_s: float | None = None
    encode_s: float | None = None
    upload_s: float | None = None


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


class JobPage(BaseModel):
    """One page of `GET /v1/jobs`; pass `next_cursor` back as `cursor` for the next page."""

    model_config = ConfigDict(frozen=True)

    jobs: list[JobRecord]
    next_cursor: str | None = None


def new_job_id() -> str:
    """A fresh, unguessable job id (32 lowercase hex characters)."""
    return uuid.uuid4().hex


def is_job_id(value: str) -> bool:
    """Whether `value` has the shape of a job id (so it is safe to use in a Redis key or an object key)."""
    return bool(_JOB_ID.match(value))


def output_key(job_id: str, index: int, fmt: OutputFormat) -> str:
    """Deterministic object key of image `index` of a job: a retry overwrites instead of duplicating."""
    return f"jobs/{job_id}/{index}.{fmt.extension}"
