"""Where an interrupted attempt left a job, and the message that carries a job to a worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .enums import CONTRACT_VERSION
from .requests import JobRequest, is_job_id


class CheckpointRef(BaseModel):
    """Where an interrupted attempt left a job's denoising state: resume at `step` from the object at `key`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(max_length=1024)
    step: int = Field(ge=0)
    attempt: int = Field(ge=1, description="The attempt that wrote it.")


class JobMessage(BaseModel):
    """What the producer sends through Dramatiq: the job id, and optionally its fully resolved request.

    A new job's message carries only its id (`wire(job_id)`): the worker runs the request the job's record holds,
    which it reads anyway when the attempt begins, so a queued job does not keep its request twice in Redis (see
    bench/scale.py, `redis_bytes_per_queued_job`). A message with a request (a re-sent one, the janitor's) runs that.
    `checkpoint` is set on a message re-sent after a spot hand-off; the job record holds the same pointer (written
    atomically with the fenced hand-off), and the record's is the one a worker resumes from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = CONTRACT_VERSION
    job_id: str
    request: JobRequest | None = None
    checkpoint: CheckpointRef | None = None

    @model_validator(mode="after")
    def _resolved(self) -> JobMessage:
        if self.request is not None and (self.request.model is None or self.request.seed is None):
            raise ValueError("request must be resolved (model and seed set) before it is sent")
        if not is_job_id(self.job_id):
            raise ValueError("job_id must be 32 lowercase hex characters")
        return self

    @staticmethod
    def wire(job_id: str, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """`JobMessage(job_id=job_id, request=...).model_dump(mode="json")` of a request already dumped (and
        resolved), without building the model: the job service makes one per job, 10 000 for a batch (a test pins
        the two equal). Without a request, the short form a new job is sent with: `{"v": 1, "job_id": ...}`."""
        if request is None:
            return {"v": CONTRACT_VERSION, "job_id": job_id}
        return {"v": CONTRACT_VERSION, "job_id": job_id, "request": request, "checkpoint": None}
