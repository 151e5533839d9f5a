"""Job records in Redis: creation, reads, listing, and the fenced state transitions workers make."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import redis

from . import keys
from .errors import JobNotFoundError
from .jobs import CONTRACT_VERSION, JobError, JobPage, JobRecord, JobRequest, JobStatus, Output, Progress, Timings

_SCRIPTS = ("claim", "touch", "settle", "cancel")


@dataclass(frozen=True)
class Claim:
    """Outcome of a worker's attempt to take a job (see lua/claim.lua)."""

    outcome: str  # "claimed" | "busy" | "skip"
    attempt: int = 0
    retry_after_s: float = 0.0
    status: str = ""


@dataclass(frozen=True)
class Touch:
    """Outcome of a lease renewal: whether the attempt still holds the job, and whether to stop."""

    held: bool
    cancel_requested: bool


class JobStore:
    """Reads and writes job records. Every transition is one atomic Lua call, fenced by the attempt number."""

    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._scripts = {
            name: client.register_script(resources.files(__package__).joinpath(f"lua/{name}.lua").read_text())
            for name in _SCRIPTS
        }

    def create(self, job_id: str, request: JobRequest, *, warnings: Iterable[str] = ()) -> JobRecord:
        """Write a new `queued` record and index it."""
        seq = int(self.client.incr(keys.SEQUENCE))
        now = time.time()
        fields = {
            "id": job_id,
            "v": str(CONTRACT_VERSION),
            "seq": str(seq),
            "status": JobStatus.QUEUED.value,
            "request": request.model_dump_json(),
            "attempts": "0",
            "created_at": repr(now),
            "warnings": json.dumps(list(warnings)),
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys.job(job_id), mapping=fields)  # type: ignore[arg-type]
        pipe.zadd(keys.INDEX_ALL, {job_id: seq})
        pipe.zadd(keys.index(JobStatus.QUEUED.value), {job_id: seq})
        pipe.execute()
        return _record(fields)

    def discard(self, job_id: str) -> None:
        """Remove a record that was never enqueued (enqueueing failed), so no half-created job remains."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(keys.job(job_id))
        for key in (keys.INDEX_ALL, *(keys.index(s.value) for s in JobStatus)):
            pipe.zrem(key, job_id)
        pipe.execute()

    def get(self, job_id: str) -> JobRecord:
        """The record of `job_id`; raises `JobNotFoundError`."""
        fields: dict[bytes, bytes] = self.client.hgetall(keys.job(job_id))  # type: ignore[assignment]
        if not fields:
            raise JobNotFoundError(job_id)
        return _record(_decode(fields))

    def list(self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None) -> JobPage:
        """Newest first; `cursor` is the `next_cursor` of the previous page."""
        index = keys.index(status.value if status else None)
        upper = f"({int(cursor)}" if cursor else "+inf"
        rows: list[tuple[bytes, float]] = self.client.zrevrangebyscore(  # type: ignore[assignment]
            index, upper, "-inf", start=0, num=limit + 1, withscores=True
        )
        more = len(rows) > limit
        rows = rows[:limit]
        pipe = self.client.pipeline(transaction=False)
        for member, _ in rows:
            pipe.hgetall(keys.job(member.decode()))
        records, expired = [], []
        for (member, _), fields in zip(rows, pipe.execute(), strict=True):
            if fields:
                records.append(_record(_decode(fields)))
            else:
                expired.append(member)
        if expired:  # records past their TTL: drop them from the index lazily
            self.client.zrem(index, *expired)
        next_cursor = str(int(rows[-1][1])) if more and rows else None
        return JobPage(jobs=records, next_cursor=next_cursor)

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued job or flag a running one; returns the status after the call."""
        status = _text(self._run("cancel", job_id, keys.INDEX_BY_STATUS, self.ttl_s))
        if status == "missing":
            raise JobNotFoundError(job_id)
        return JobStatus(status)

    # The worker's side: every write after `claim` carries the attempt number it got (a fencing token).

    def claim(self, job_id: str, *, worker: str, lease_s: float, max_attempts: int) -> Claim:
        """Take `job_id` for one attempt, counting attempts so a job that kills its worker cannot loop forever."""
        outcome, detail = (
            _text(x)
            for x in self._run("claim", job_id, worker, lease_s, max_attempts, keys.INDEX_BY_STATUS, self.ttl_s)
        )
        if outcome == "claimed":
            return Claim(outcome, attempt=int(detail))
        if outcome == "busy":
            return Claim(outcome, retry_after_s=float(detail))
        return Claim(outcome, status=detail)

    def touch(self, job_id: str, attempt: int, *, lease_s: float, progress: Progress | None = None) -> Touch:
        """Renew the lease (and record progress); tells whether the attempt still holds the job."""
        payload = progress.model_dump_json() if progress else ""
        outcome, detail = (_text(x) for x in self._run("touch", job_id, attempt, lease_s, payload))
        return Touch(held=outcome == "ok", cancel_requested=outcome == "ok" and detail == "1")

    def settle(self, job_id: str, attempt: int, status: JobStatus, **fields: Any) -> bool:
        """End the attempt with `status` (terminal, or `queued` to hand the job back); False if fenced off."""
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value if isinstance(value, str) else json.dumps(_jsonable(value))]
        result = self._run("settle", job_id, attempt, status.value, keys.INDEX_BY_STATUS, self.ttl_s, *flat)
        return _text(result) == "ok"

    def _run(self, script: str, job_id: str, *args: str | int | float) -> Any:
        """Run one of the Lua scripts on the job's key."""
        return self._scripts[script](keys=[keys.job(job_id)], args=list(args))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


def _time(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=timezone.utc) if value else None


def _record(f: Mapping[str, str]) -> JobRecord:
    created = _time(f["created_at"])
    assert created is not None
    return JobRecord(
        id=f["id"],
        status=JobStatus(f["status"]),
        request=JobRequest.model_validate_json(f["request"]),
        attempts=int(f.get("attempts", "0")),
        created_at=created,
        started_at=_time(f.get("started_at")),
        finished_at=_time(f.get("finished_at")),
        progress=Progress.model_validate_json(f["progress"]) if f.get("progress") else None,
        timings=Timings.model_validate_json(f["timings"]) if f.get("timings") else Timings(),
        outputs=[Output.model_validate(o) for o in json.loads(f.get("outputs") or "[]")],
        error=JobError.model_validate_json(f["error"]) if f.get("error") else None,
        worker=f.get("worker"),
        cancel_requested=f.get("cancel") == "1",
        warnings=json.loads(f.get("warnings") or "[]"),
    )
