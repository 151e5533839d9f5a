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

    @staticmethod
    def wire(job_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """`JobMessage(job_id=job_id, request=...).model_dump(mode="json")` of a request already dumped (and
        resolved), without building the model: the job service makes one per job, 10 000 for a batch (a test pins
        the two equal)."""
        return {"v": CONTRACT_VERSION, "job_id": job_id, "request": request, "checkpoint": None}
