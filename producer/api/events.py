"""Live progress: `GET /v1/jobs/{id}/events` streams a job's status and denoising steps as Server-Sent Events.

Events: `status` (data: the job record, with output URLs once it has them) first and on every status change;
`progress` (data: `{"step", "total"}`) on every step a worker reports; `queue` (data: `{"queue_position", "eta_s"}`)
when the job's place in line or its ETA changed, at most once a second. The stream ends after the terminal
`status` event, or after `SDQ_MAX_STREAM_S`: every event carries an `id` and `retry`, and a client that reconnects
with `Last-Event-ID` gets ids continuing after it and the current record first (a `status` event: the state, so
nothing that changed while it was away is missed). The process's one poller (`streamhub.py`) watches two fields
of the record (a cheap HMGET, pipelined with every other stream's) and the stream reads the whole record only
when the status changes, so many watchers cost Redis little; FastAPI adds keep-alive comments while nothing
happens. Each stream holds a slot under its key's cap (`streams.py`), and ends within a heartbeat of the key's
revocation.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from .. import jobhash
from ..errors import JobNotFoundError
from ..eta import Forecaster
from ..jobs import JobRecord, JobStatus, is_job_id
from .auth import CallerDep
from .deps import Deps
from .errors import ERROR_RESPONSES
from .streamhub import StreamHub
from .streams import LeaseDep, ResumeDep, limits_of

# Errors are JSON even on this route (FastAPI would otherwise document them as text/event-stream).
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": response["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for status, response in ERROR_RESPONSES.items()
}
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=_ERRORS)

#: Browsers reconnect after this long when the connection drops.
RETRY_MS = 1000


def _watched_job(job_id: str, http: Request, caller: CallerDep) -> JobRecord:
    # A dependency, so that an unknown (or another tenant's) job is a 404 before the stream starts.
    if not is_job_id(job_id):
        raise JobNotFoundError(job_id)
    deps = Deps.of(http)
    return deps.with_eta(deps.with_urls(deps.service.get(job_id, tenant=caller.tenant, price=deps.pricer())))


@router.get("/{job_id}/events", response_class=EventSourceResponse, summary="Stream a job's progress (SSE)")
async def events(
    http: Request, record: Annotated[JobRecord, Depends(_watched_job)], lease: LeaseDep, resumed: ResumeDep
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: `status` (the record) on connect and on each change, `progress` on each step; the
    stream closes after the terminal status, or after its maximum duration (reconnect with `Last-Event-ID`)."""
    deps = Deps.of(http)
    serial = resumed

    def event(name: str, data: str) -> ServerSentEvent:
        nonlocal serial
        serial += 1
        return ServerSentEvent(event=name, raw_data=data, id=str(serial), retry=RETRY_MS)

    yield event("status", record.model_dump_json())
    status, progress = record.status, record.progress
    current = record  # the place in line and ETA last sent
    ends_at = time.monotonic() + limits_of(http).max_duration_s
    with StreamHub.of(http).subscribe({record.id}, lease, outlooks=True) as watching:
        while not status.is_terminal and time.monotonic() < ends_at:
            if await http.is_disconnected():
                return
            await watching.next_tick(ends_at)  # woken only when something changed (or at the end)
            if watching.ended is not None:  # the key was revoked, or Redis failed
                return
            outlook = watching.take_outlook()  # read for every stream at once, at most once a second
            if outlook is not None:
                places, pace = outlook
                fresh_outlook = Forecaster.outlook_at(current, places.get(record.id), pace)
                if _outlook(fresh_outlook) != _outlook(current):
                    current = fresh_outlook
                    yield event("queue", json.dumps(_outlook(current)))
            now_status, now_progress = jobhash.watched(watching.latest.get(record.id, (None, None)))
            if now_status is None:  # the record expired under us
                return
            if now_progress and now_progress != progress and now_status is JobStatus.RUNNING:
                yield event("progress", now_progress.model_dump_json())
            progress = now_progress
            if now_status is not status:
                fresh = await run_in_threadpool(deps.service.get, record.id, price=deps.pricer())
                current = deps.with_eta(deps.with_urls(fresh))
                yield event("status", current.model_dump_json())
                status = fresh.status


def _outlook(record: JobRecord) -> dict[str, Any]:
    """What a `queue` event carries."""
    eta = record.eta_s.model_dump(mode="json") if record.eta_s is not None else None
    return {"queue_position": record.queue_position, "eta_s": eta}
