"""Routes for batches: create (JSON or JSON Lines), read, page through finished jobs, cancel."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..batch_body import BatchValidationError, parse_stream
from ..batches import BatchService
from ..errors import BatchNotFoundError
from ..jobs import MAX_BATCH_ITEMS, BatchCreated, BatchJobPage, BatchRecord, BatchRequest, is_job_id
from .auth import CallerDep
from .errors import ERROR_RESPONSES, error_response
from .jobs import IdempotencyKey
from .params import QueryInt

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=ERROR_RESPONSES)

_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        BatchRequest.model_json_schema(),
                        {"type": "array", "items": {"type": "object"}, "minItems": 1, "maxItems": MAX_BATCH_ITEMS},
                    ]
                }
            },
            "application/x-ndjson": {
                "schema": {"type": "string", "description": 'One item per line; optional first line {"defaults": …}.'}
            },
        },
    }
}


def _service(http: Request) -> BatchService:
    service: BatchService = http.app.state.batches
    return service


class _BodyReader:
    """The request body, chunk by chunk as it arrives, for a parser running in a worker thread: each `read` waits
    on the event loop for the next chunk, so the body is never buffered whole, and a parser that stops early (the
    item cap) leaves the rest unread (uvicorn discards it once the answer is sent)."""

    def __init__(self, http: Request) -> None:
        self._chunks = http.stream()

    def read(self) -> bytes:
        """The next chunk, b"" at the end; raises what reading raises (413 past the body limit, a disconnect)."""
        return anyio.from_thread.run(self._next)

    async def _next(self) -> bytes:
        async for chunk in self._chunks:
            if chunk:
                return chunk
        return b""


def _id(batch_id: str) -> str:
    if not is_job_id(batch_id):  # batch ids have the job-id shape
        raise BatchNotFoundError(batch_id)
    return batch_id


@router.post("", status_code=202, response_model=BatchCreated, summary="Submit a batch of jobs", openapi_extra=_BODY)
async def create(
    http: Request, response: Response, caller: CallerDep, idempotency_key: IdempotencyKey = None
) -> BatchCreated | JSONResponse:
    """Up to 10 000 jobs with shared `defaults`, as a JSON object, a JSON array of items or JSON Lines.

    Every item is validated before anything is enqueued: one bad item gives 422 naming `items.<index>.<field>`."""
    # Read only now, after `caller`: a request without a valid key is refused before its body is read.
    body = _BodyReader(http)
    try:
        # Parsed as it arrives, in a thread: other requests on this loop go on, and a body past the item cap is
        # refused at once, its first ~10 000 items read and nothing more.
        batch = await run_in_threadpool(parse_stream, body.read, http.headers.get("content-type", ""))
        batch = await run_in_threadpool(http.app.state.inputs.prepare_batch, batch, caller.tenant)
        created, new = await run_in_threadpool(
            _service(http).create, batch, owner=caller.owner, idempotency_key=idempotency_key
        )
    except BatchValidationError as exc:
        return error_response(422, "validation_error", str(exc), fields=exc.fields)
    response.headers["Location"] = f"/v1/batches/{created.id}"
    if not new:
        response.headers["Idempotent-Replayed"] = "true"
    return created


@router.get("/{batch_id}", response_model=BatchRecord, summary="Get a batch")
def get(batch_id: str, http: Request, caller: CallerDep) -> BatchRecord:
    """Counts by status, progress, the cost of the batch's jobs so far and when it should finish."""
    record = _service(http).get(_id(batch_id), tenant=caller.tenant)
    forecaster = http.app.state.deps.forecaster
    if forecaster is None:
        return record
    eta = forecaster.batch(record.id, queued=record.counts.queued, running=record.counts.running)
    return record.model_copy(update={"eta_s": eta})


@router.get("/{batch_id}/jobs", response_model=BatchJobPage, summary="Finished jobs of a batch")
def finished_jobs(
    batch_id: str,
    http: Request,
    caller: CallerDep,
    offset: Annotated[QueryInt, Query(ge=0, le=MAX_BATCH_ITEMS)] = 0,
    limit: Annotated[QueryInt, Query(ge=1, le=500)] = 100,
) -> BatchJobPage:
    """The batch's jobs in the order they finished, with fresh output URLs; pass `next_offset` back as `offset`."""
    deps = http.app.state.deps
    page = _service(http).finished_jobs(
        _id(batch_id), tenant=caller.tenant, offset=offset, limit=limit, price=deps.pricer()
    )
    return page.model_copy(update={"jobs": [deps.with_urls(job) for job in page.jobs]})


@router.post("/{batch_id}/cancel", response_model=BatchRecord, summary="Cancel a batch")
def cancel(batch_id: str, http: Request, caller: CallerDep) -> BatchRecord:
    """Cancel every unfinished job: queued ones never run, running ones stop at their next step."""
    return _service(http).cancel(_id(batch_id), tenant=caller.tenant)
