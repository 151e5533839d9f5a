"""Routes for jobs: submit, read, list, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from ..errors import JobNotFoundError
from ..jobs import JobPage, JobRecord, JobRequest, JobStatus, is_job_id
from .auth import CallerDep, KeyFirstRoute
from .deps import Deps
from .errors import ERROR_RESPONSES
from .params import QueryInt
from .submit_route import accepted

#: The optional `Idempotency-Key` request header (1–255 visible ASCII characters).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="Makes the POST safe to retry: the same key returns the same result for a day.",
    ),
]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES)


def _id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise JobNotFoundError(job_id)
    return job_id


async def submit(
    request: JobRequest, http: Request, caller: CallerDep, idempotency_key: IdempotencyKey = None
) -> Response:
    """Validate and enqueue a text-to-image job. 422 with field errors and nothing enqueued on bad input.

    With an `Idempotency-Key`, a retry returns the job the first request made (header `Idempotent-Replayed`)."""
    service, aclient = Deps.of(http).service, getattr(http.app.state, "aredis", None)
    if request.has_inputs:  # InvalidInputError: 422 naming the image field; text-only jobs skip this
        request = await run_in_threadpool(http.app.state.inputs.prepare, request, caller.tenant)
    if aclient is not None:  # one Redis round trip on the event loop, no thread hop
        created = await service.submit_once_async(aclient, request, owner=caller.owner, idempotency_key=idempotency_key)
    else:
        created = await run_in_threadpool(
            service.submit_once, request, owner=caller.owner, idempotency_key=idempotency_key
        )
    return accepted(created)


def install_submit(app: FastAPI) -> None:
    """`POST /v1/jobs` on the app's own router, ahead of every included one (matched first, not through the
    routers' matching); common submissions are answered before it, by `SubmitLane` (api/submit_route.py). Call it
    before including the routers."""
    app.router.add_api_route(
        router.prefix,
        submit,
        methods=["POST"],
        status_code=202,
        response_model=JobRecord,
        summary="Submit a job",
        tags=list(router.tags),
        responses=ERROR_RESPONSES,
        route_class_override=KeyFirstRoute,  # the key before the body
    )


@router.get("/{job_id}", response_model=JobRecord, summary="Get a job")
def get(job_id: str, http: Request, caller: CallerDep) -> JobRecord:
    """The job's record, with freshly presigned output URLs; while queued its place in line and ETA."""
    deps = Deps.of(http)
    return deps.with_eta(deps.with_urls(deps.service.get(_id(job_id), tenant=caller.tenant, price=deps.pricer())))


@router.get("", response_model=JobPage, summary="List jobs")
def list_jobs(
    http: Request,
    caller: CallerDep,
    status: JobStatus | None = None,
    limit: Annotated[QueryInt, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
) -> JobPage:
    """Jobs newest first, optionally of one status; follow `next_cursor` for the next page."""
    deps = Deps.of(http)
    # One read of the page's hashes, priced from them (no second read per record).
    page = deps.service.list(status=status, limit=limit, cursor=cursor, tenant=caller.tenant, price=deps.pricer())
    return page.model_copy(update={"jobs": [deps.with_eta(deps.with_urls(job)) for job in page.jobs]})


# POST …/cancel, not DELETE: the job and its record stay (canceled), and a DELETE that leaves the resource readable
# would not be one (RFC 9110 §9.3.5).
_STOPPING: dict[int | str, dict[str, Any]] = {
    202: {"model": JobRecord, "description": "A running job was asked to stop; it stops at its next step."}
}


@router.post("/{job_id}/cancel", response_model=JobRecord, summary="Cancel a job", responses=_STOPPING)
def cancel(job_id: str, http: Request, response: Response, caller: CallerDep) -> JobRecord:
    """A queued job never runs (200); a running one stops at its next denoising step (202 until it has)."""
    record = Deps.of(http).service.cancel(_id(job_id), tenant=caller.tenant)
    response.status_code = 200 if record.status.is_terminal else 202
    return record
