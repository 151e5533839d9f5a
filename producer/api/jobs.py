"""Routes for jobs: submit, read, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from ..errors import JobNotFoundError
from ..jobs import JobPage, JobRecord, JobRequest, JobStatus, is_job_id
from .deps import Deps
from .errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES)


def _id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise JobNotFoundError(job_id)
    return job_id


@router.post("", status_code=202, response_model=JobRecord, summary="Submit a job")
def submit(request: JobRequest, http: Request, response: Response) -> JobRecord:
    """Validate and enqueue a text-to-image job. 422 with field errors and nothing enqueued on bad input."""
    record = Deps.of(http).service.submit(request)
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return record


@router.get("/{job_id}", response_model=JobRecord, summary="Get a job")
def get(job_id: str, http: Request) -> JobRecord:
    """The job's record, with freshly presigned output URLs."""
    deps = Deps.of(http)
    return deps.with_urls(deps.service.get(_id(job_id)))


@router.get("", response_model=JobPage, summary="List jobs")
def list_jobs(
    http: Request,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
) -> JobPage:
    """Jobs newest first, optionally of one status; follow `next_cursor` for the next page."""
    deps = Deps.of(http)
    page = deps.service.list(status=status, limit=limit, cursor=cursor)
    return page.model_copy(update={"jobs": [deps.with_urls(job) for job in page.jobs]})


@router.delete("/{job_id}", response_model=JobRecord, summary="Cancel a job")
def cancel(job_id: str, http: Request, response: Response) -> JobRecord:
    """A queued job never runs (200); a running one stops at its next denoising step (202 until it has)."""
    record = Deps.of(http).service.cancel(_id(job_id))
    response.status_code = 200 if record.status.is_terminal else 202
    return record
