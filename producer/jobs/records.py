"""A job as the API reports it: `JobRecord`, its parts (progress, timings, outputs, error) and a page of them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .checkpoints import CheckpointRef
from .costs import JobCost
from .enums import CONTRACT_VERSION, ErrorCode, Family, JobStatus
from .inputs import is_empty
from .requests import JobRequest


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


class InputImage(BaseModel):
    """One input image of the job, with a link to see it. `url` is presigned when the record is read: the prepared
    image the job ran with (`inputs/<job>/<name>.png`) once it succeeded, else the upload as it was sent; null for
    an https input not prepared yet (its own URL is in the request) or where storage cannot presign."""

    model_config = ConfigDict(frozen=True)

    field: str = Field(
        description="The request field, as errors name it: `image`, `mask_image`, `controlnets.0.image`."
    )
    name: str = Field(description="Its name under `inputs/<job>/`: `image`, `mask`, `controlnet-0`, `ip-adapter`.")
    upload: str | None = Field(default=None, description="The upload id the request named, if any.")
    url: str | None = Field(default=None, description="A presigned GET link to the image; never carries an API key.")


class JobError(BaseModel):
    """Why a job failed."""

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str


class Eta(BaseModel):
    """When a job is expected to start and to finish, in seconds from now, from the fleet's throughput over the
    last minutes (`producer.eta`). Without an estimate both are null and `reason` says why (e.g. no workers yet)."""

    model_config = ConfigDict(frozen=True)

    start: float | None = Field(default=None, description="Seconds until the job starts (0 once it runs).")
    finish: float | None = Field(default=None, description="Seconds until the job finishes.")
    reason: str | None = Field(default=None, description="Why there is no estimate.")


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
    inputs: list[InputImage] = Field(
        default_factory=list,
        exclude_if=is_empty,
        description="The input images (image, mask, ControlNet images, IP-Adapter image) with presigned links, filled"
        " in when read through the API; left out for a text-only job.",
    )
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
    queue_position: int | None = Field(
        default=None,
        description="While queued: how many jobs run before this one (interactive jobs before batch jobs, each in"
        " the order they were queued). Null once it has started.",
    )
    family: Family | None = Field(
        default=None, description="The model family that rendered the job (read from the pipeline the worker loaded)."
    )
    dtype: str | None = Field(
        default=None, description="The dtype it ran in: float16 or bfloat16 on CUDA (by family), float32 elsewhere."
    )
    eta_s: Eta | None = Field(
        default=None,
        description="While queued or running: seconds until it starts and until it finishes, from the fleet's"
        " recent throughput (null with a reason when there is no estimate, e.g. no workers yet).",
    )
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
