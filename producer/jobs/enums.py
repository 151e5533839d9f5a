"""The contract's version and vocabularies: job status, error codes, schedulers, model families, formats, webhook
event types."""

from __future__ import annotations

import enum
from typing import Literal

#: Version of the message and record schema. Bump on any incompatible change.
CONTRACT_VERSION: Literal[1] = 1


class TextEnum(str, enum.Enum):
    """A string-valued enum that prints as its value (what `enum.StrEnum` does from Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)


class JobStatus(TextEnum):
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


class ErrorCode(TextEnum):
    """Machine-readable reason a job failed."""

    INVALID_INPUT = "invalid_input"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_LOAD_FAILED = "model_load_failed"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    STORAGE = "storage_error"
    INTERNAL = "internal"


class Scheduler(TextEnum):
    """Noise schedulers a job may ask for; `default` keeps the one the model ships with."""

    DEFAULT = "default"
    DDIM = "ddim"
    EULER = "euler"
    EULER_ANCESTRAL = "euler_a"
    DPMPP_2M = "dpmpp_2m"
    UNIPC = "unipc"
    PNDM = "pndm"


class Family(TextEnum):
    """A model family, by architecture (what each accepts: `producer.families`)."""

    SD = "sd"  # SD 1.x / 2.x
    SDXL = "sdxl"
    SD3 = "sd3"
    FLUX = "flux"
    OTHER = "other"  # any other text-to-image pipeline diffusers loads: run with its own scheduler only


class WebhookEventType(TextEnum):
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


class OutputFormat(TextEnum):
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
