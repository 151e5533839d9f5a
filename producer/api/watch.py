"""`GET /v1/events`: one Server-Sent Events stream for a set of jobs (a dashboard page), instead of one per job.

Events: `ready` (data: `{"jobs", "recent"}`) once the stream watches; `job` (data: the record, with output URLs)
for each watched job on connect and whenever its status changes (and, for queued jobs, when their record changes:
queue position and ETA); `progress` (data: `{"id", "step", "total"}`) on each step a worker reports; `gone`
(data: `{"id"}`) for an id that is not there, or not the caller's. With `recent=true` the stream also sends `job`
for every job of the caller created after it connected, and watches those too. One poll reads every watched job's
status and progress in one pipelined round trip, shared with every other stream of the process (`streamhub.py`).
The stream is bounded: at most `MAX_JOBS` ids, one slot under its key's stream cap, and it ends after
`SDQ_MAX_STREAM_S` (clients reconnect; with `Last-Event-ID` the ids continue after it) or within a heartbeat of
its key's revocation.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from .. import keys
from ..errors import JobNotFoundError
from ..jobs import JobRecord, JobStatus
from .auth import Caller, CallerDep
from .deps import Deps
from .events import _ERRORS
from .params import QueryBool
from .streamhub import StreamHub, Subscription
from .streams import LeaseDep, ResumeDep, limits_of

router = APIRouter(prefix="/v1/events", tags=["jobs"], responses=_ERRORS)

#: The most jobs one stream watches (two dashboard pages' worth).
MAX_JOBS = 200
#: How often a `recent=true` stream looks for the caller's new jobs.
POLL_INTERVAL_S = 0.25
#: How often queued jobs' whole records are re-read (their queue position and ETA move without a status change).
QUEUED_REFRESH_S = 5.0
RETRY_MS = 1000

JobIds = Annotated[
    str,
    Query(
        pattern=rf"^([0-9a-f]{{32}}(,[0-9a-f]{{32}}){{0,{MAX_JOBS - 1}}})?$",
        description=f"Comma-separated job ids, at most {MAX_JOBS}.",
    ),
]


class _Watch:
    """The jobs one stream watches and what it last told about each."""

    def __init__(self, http: Request, caller: Caller) -> None:
        self.deps = Deps.of(http)
        self.client = self.deps.service.store.client
        self.tenant = caller.tenant
        self.seen: dict[str, tuple[str, str | None]] = {}  # id → (status, progress json)
        self.sent: dict[str, str] = {}  # id → the last record sent (queued jobs only)
        self.newest = 0.0  # score of the newest job in the caller's index when the stream started

    def record(self, job_id: str) -> JobRecord | None:
        try:
            record = self.deps.service.get(job_id, tenant=self.tenant, price=self.deps.pricer())
            return self.deps.with_urls(record)
        except JobNotFoundError:
            return None

    def polled(self, watching: Subscription) -> list[tuple[str, str | None, str | None]]:
        """What the hub last read of the jobs still watched."""
        return [(job_id, *watching.latest[job_id]) for job_id in list(self.seen) if job_id in watching.latest]

    def _index(self) -> str:
        return keys.index(None) if self.tenant is None else keys.tenant_index(self.tenant, None)

    def mark_newest(self) -> None:
        top: list[tuple[bytes, float]] = self.client.zrevrange(self._index(), 0, 0, withscores=True)  # type: ignore[assignment]
        self.newest = float(top[0][1]) if top else 0.0

    def created(self) -> list[str]:
        rows: list[tuple[bytes, float]] = self.client.zrangebyscore(  # type: ignore[assignment]
            self._index(), f"({self.newest}", "+inf", start=0, num=50, withscores=True
        )
        if rows:
            self.newest = float(rows[-1][1])
        room = MAX_JOBS - len(self.seen)
        return [member.decode() for member, _ in rows][: max(0, room)]


@router.get("", response_class=EventSourceResponse, summary="Stream many jobs' progress (SSE)")
async def watch(
    http: Request, caller: CallerDep, lease: LeaseDep, resumed: ResumeDep, jobs: JobIds = "", recent: QueryBool = False
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events for up to 200 jobs: `job` (the record) on connect and on each change, `progress` on each
    step, `gone` for an unknown id; with `recent=true` also every job the caller submits after connecting."""
    state = _Watch(http, caller)
    serial = resumed

    def event(name: str, data: str) -> ServerSentEvent:
        nonlocal serial
        serial += 1
        return ServerSentEvent(event=name, raw_data=data, id=str(serial), retry=RETRY_MS)

    async def announce(job_id: str) -> ServerSentEvent:
        record = await run_in_threadpool(state.record, job_id)
        if record is None:
            state.seen.pop(job_id, None)
            return event("gone", json.dumps({"id": job_id}))
        body = record.model_dump_json()
        state.seen[job_id] = (record.status.value, record.progress.model_dump_json() if record.progress else None)
        if record.status is JobStatus.QUEUED:
            state.sent[job_id] = body
        else:
            state.sent.pop(job_id, None)
        return event("job", body)

    if recent:
        await run_in_threadpool(state.mark_newest)
    wanted = list(dict.fromkeys(j for j in jobs.split(",") if j))
    yield event("ready", json.dumps({"jobs": len(wanted), "recent": recent}))
    for job_id in wanted:
        yield await announce(job_id)
    ends_at = time.monotonic() + limits_of(http).max_duration_s
    refreshed = looked = time.monotonic()
    with StreamHub.of(http).subscribe(state.seen, lease) as watching:
        while time.monotonic() < ends_at and (recent or state.seen):
            if await http.is_disconnected():
                return
            watching.ids = set(state.seen)
            # Woken when a watched job changed, else when this stream's own timers are due.
            due = [ends_at, *([looked + POLL_INTERVAL_S] if recent else []), refreshed + QUEUED_REFRESH_S]
            await watching.next_tick(min(due))
            if watching.ended is not None:  # the key was revoked, or Redis failed
                return
            for job_id, status, progress in state.polled(watching):
                last_status, last_progress = state.seen.get(job_id, ("", None))
                if status is None:  # expired
                    state.seen.pop(job_id, None)
                    yield event("gone", json.dumps({"id": job_id}))
                    continue
                if progress and progress != last_progress and status == JobStatus.RUNNING.value:
                    yield event("progress", json.dumps({"id": job_id, **json.loads(progress)}))
                state.seen[job_id] = (last_status, progress)
                if status != last_status:
                    yield await announce(job_id)
                elif JobStatus(status).is_terminal:
                    state.seen.pop(job_id, None)  # told once; nothing more will change
            if recent and time.monotonic() - looked >= POLL_INTERVAL_S:
                looked = time.monotonic()
                for job_id in await run_in_threadpool(state.created):
                    yield await announce(job_id)
            if time.monotonic() - refreshed >= QUEUED_REFRESH_S:
                refreshed = time.monotonic()
                for job_id, before in list(state.sent.items()):
                    record = await run_in_threadpool(state.record, job_id)
                    if record is not None and record.status is JobStatus.QUEUED and record.model_dump_json() != before:
                        yield await announce(job_id)
