"""Job records in Redis: creation, reads, listing, and the fenced state transitions workers make."""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import redis
import redis.asyncio
from redis.commands.core import AsyncScript

from . import keys
from .broker import Encoded
from .errors import IdempotencyConflictError, JobNotFoundError, QuotaExceededError
from .jobs import (
    CONTRACT_VERSION,
    CheckpointRef,
    JobError,
    JobPage,
    JobRecord,
    JobRequest,
    JobStatus,
    Output,
    Progress,
    Timings,
)

_SCRIPTS = ("claim", "touch", "settle", "cancel", "reap", "create")


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


#: What a client is told to wait before retrying a submission refused by its queued-jobs quota.
QUOTA_RETRY_AFTER_S = 5.0


@dataclass(frozen=True)
class Owner:
    """Who submits a job: its tenant, and the API key whose queued-jobs quota it counts against (0 = none)."""

    tenant: str = ""
    key_id: str = ""
    max_queued: int = 0


@dataclass(frozen=True)
class Idempotency:
    """An `Idempotency-Key` and the hash of the request body it was sent with."""

    key: str
    body_hash: str
    ttl_s: int = 24 * 3600


@dataclass(frozen=True)
class Created:
    """A job from `JobStore.create`: new (`created`), or the one an Idempotency-Key already produced."""

    record: JobRecord
    created: bool


@dataclass(frozen=True)
class Reap:
    """Outcome of the janitor ending an expired attempt (see lua/reap.lua)."""

    outcome: str  # "requeued" | "failed" | "held" (lease still live) | "lost" (the attempt no longer holds the job)
    detail: str = ""


class JobStore:
    """Reads and writes job records. Every transition is one atomic Lua call, fenced by the attempt number."""

    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._scripts = {name: client.register_script(lua_script(name)) for name in _SCRIPTS}
        self._async_scripts: dict[int, AsyncScript] = {}

    def create(
        self,
        job_id: str,
        request: JobRequest,
        *,
        warnings: Iterable[str] = (),
        owner: Owner | None = None,
        idempotency: Idempotency | None = None,
        message: Encoded | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Created:
        """Write a new `queued` record and index it, in one atomic step (lua/create.lua).

        With an `owner`, the job belongs to its tenant and counts against its API key's queued-jobs quota
        (`QuotaExceededError`). With `idempotency`, a key that already produced a job returns that job
        (`created=False`) when the body hash matches, and raises `IdempotencyConflictError` when it does not.
        With `message`, the job's Dramatiq message is enqueued in the same step; `extra` adds record fields.
        """
        call = _create_call(job_id, request, warnings, owner, idempotency, message, extra)
        outcome, detail = (_text(x) for x in self._scripts["create"](keys=call.keys, args=call.args))
        return self._created(call, outcome, detail, self.get)

    async def create_async(
        self,
        aclient: redis.asyncio.Redis,
        job_id: str,
        request: JobRequest,
        *,
        owner: Owner | None = None,
        idempotency: Idempotency | None = None,
        message: Encoded | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Created:
        """`create` over an asyncio client (the API's hot path: no thread hop, no blocked event loop)."""
        script = self._async_scripts.get(id(aclient))
        if script is None:
            script = self._async_scripts[id(aclient)] = aclient.register_script(lua_script("create"))
        call = _create_call(job_id, request, (), owner, idempotency, message, extra)
        outcome, detail = (_text(x) for x in await script(keys=call.keys, args=call.args))
        if outcome == "existing":  # rare: a retried request; read the first job's record
            raw = await aclient.hgetall(keys.job(detail))
            return Created(_record({_text(k): _text(v) for k, v in raw.items()}), created=False)
        return self._created(call, outcome, detail, self.get)

    @staticmethod
    def _created(call: _CreateCall, outcome: str, detail: str, get: Callable[[str], JobRecord]) -> Created:
        if outcome == "created":
            return Created(_record(call.fields), created=True)
        if outcome == "existing":
            return Created(get(detail), created=False)
        if outcome == "mismatch":
            raise IdempotencyConflictError(
                f"Idempotency-Key was already used for job {detail} with a different request body"
            )
        raise QuotaExceededError(
            f"this API key already has {detail} queued jobs, its quota; retry when some have started",
            retry_after_s=QUOTA_RETRY_AFTER_S,
        )

    def discard(self, job_id: str, *, idempotency_key: str | None = None) -> None:
        """Remove a record that was never enqueued (enqueueing failed), so no half-created job remains."""
        tenant, key_id = (_text(v) if v else "" for v in self.client.hmget(keys.job(job_id), ["tenant", "key_id"]))
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(keys.job(job_id))
        for key in (keys.INDEX_ALL, *(keys.index(s.value) for s in JobStatus)):
            pipe.zrem(key, job_id)
        if tenant:
            for status in (None, *(s.value for s in JobStatus)):
                pipe.zrem(keys.tenant_index(tenant, status), job_id)
        if key_id:
            pipe.zrem(keys.key_queued(key_id), job_id)
        if idempotency_key:
            pipe.delete(keys.idempotency(tenant, "jobs", idempotency_key))
        pipe.execute()

    def get(self, job_id: str) -> JobRecord:
        """The record of `job_id`; raises `JobNotFoundError`."""
        fields: dict[bytes, bytes] = self.client.hgetall(keys.job(job_id))  # type: ignore[assignment]
        if not fields:
            raise JobNotFoundError(job_id)
        return _record(_decode(fields))

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord]:
        """The records of `job_ids` that still exist, in the same order (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return [_record(_decode(fields)) for fields in pipe.execute() if fields]

    def cancel_many(self, job_ids: Iterable[str]) -> None:
        """`cancel` each job (one round trip): queued ones end at once, running ones are flagged."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            self._scripts["cancel"](keys=[keys.job(job_id)], args=[keys.INDEX_BY_STATUS, self.ttl_s], client=pipe)
        pipe.execute()

    def list(
        self,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> JobPage:
        """Newest first (only `tenant`'s jobs when given); `cursor` is the `next_cursor` of the previous page."""
        state = status.value if status else None
        index = keys.index(state) if tenant is None else keys.tenant_index(tenant, state)
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
        return self.touch_many([(job_id, attempt, lease_s, progress)])[0]

    def touch_many(self, leases: Sequence[tuple[str, int, float, Progress | None]]) -> Sequence[Touch]:
        """`touch` for several (job id, attempt, lease_s, progress) at once: one round trip for all of them."""
        pipe = self.client.pipeline(transaction=False)
        for job_id, attempt, lease_s, progress in leases:
            payload = progress.model_dump_json() if progress else ""
            self._scripts["touch"](keys=[keys.job(job_id)], args=[attempt, lease_s, payload], client=pipe)
        touches: builtins.list[Touch] = []
        for result in pipe.execute():
            outcome, detail = (_text(x) for x in result)
            touches.append(Touch(held=outcome == "ok", cancel_requested=outcome == "ok" and detail == "1"))
        return touches

    def settle(self, job_id: str, attempt: int, status: JobStatus, **fields: Any) -> bool:
        """End the attempt with `status` (terminal, or `queued` to hand the job back); False if fenced off."""
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value if isinstance(value, str) else json.dumps(_jsonable(value))]
        result = self._run("settle", job_id, attempt, status.value, keys.INDEX_BY_STATUS, self.ttl_s, *flat)
        return _text(result) == "ok"

    # The janitor's side (producer/controller/janitor.py).

    def reap(self, job_id: str, attempt: int, *, grace_s: float, max_attempts: int, note: str) -> Reap:
        """End `attempt` if its lease expired over `grace_s` ago: requeue the job, or fail it (`worker_lost`) once
        it has run `max_attempts` times. Fenced like `settle`; `note` is added to the job's warnings."""
        outcome, detail = (
            _text(x)
            for x in self._run("reap", job_id, attempt, grace_s, max_attempts, keys.INDEX_BY_STATUS, self.ttl_s, note)
        )
        return Reap(outcome, detail)

    def enable_hooks(self, job_id: str, *, progress: bool) -> None:
        """Make the job's transitions (and progress, if asked) feed the webhook events stream (lua/_moved.lua).

        Called after `create` and before the job is enqueued, so no transition can happen before it."""
        self.client.hset(keys.job(job_id), "hooks", "2" if progress else "1")

    def _run(self, script: str, job_id: str, *args: str | int | float) -> Any:
        """Run one of the Lua scripts on the job's key."""
        return self._scripts[script](keys=[keys.job(job_id)], args=list(args))


@dataclass(frozen=True)
class _CreateCall:
    keys: list[str]
    args: list[Any]
    fields: dict[str, str]


def _create_call(
    job_id: str,
    request: JobRequest,
    warnings: Iterable[str],
    owner: Owner | None,
    idempotency: Idempotency | None,
    message: Encoded | None,
    extra: Mapping[str, str] | None,
) -> _CreateCall:
    """The keys and arguments of lua/create.lua for one job, and the record fields it writes."""
    owner = owner or Owner()
    fields = {
        "id": job_id,
        "v": str(CONTRACT_VERSION),
        "status": JobStatus.QUEUED.value,
        "request": request.model_dump_json(),
        "attempts": "0",
        "created_at": repr(time.time()),
        "warnings": json.dumps(list(warnings)),
    }
    if owner.tenant:
        fields["tenant"] = owner.tenant
    if owner.key_id:
        fields["key_id"] = owner.key_id
    fields.update(extra or {})
    idem_key = keys.idempotency(owner.tenant, "jobs", idempotency.key) if idempotency else ""
    call_keys = [
        keys.job(job_id),
        idem_key,
        message.queue_key if message else "",
        message.msgs_key if message else "",
    ]
    args: list[Any] = [
        job_id,
        owner.tenant,
        owner.key_id,
        idempotency.body_hash if idempotency else "",
        owner.max_queued,
        idempotency.ttl_s if idempotency else 0,
        message.redis_id if message else "",
        message.body if message else b"",
        *(item for pair in fields.items() for item in pair),
    ]
    return _CreateCall(call_keys, args, fields)


def lua_script(name: str) -> str:
    """A Lua script with the key prefix and the side-index helper every status change calls (lua/_moved.lua)."""
    lua = resources.files(__package__).joinpath("lua")
    prelude = f"local SDQ = {json.dumps(keys.PREFIX)}\n" + lua.joinpath("_moved.lua").read_text()
    return prelude + lua.joinpath(f"{name}.lua").read_text()


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
        tenant=f.get("tenant") or None,
        batch_id=f.get("batch_id") or None,
        warnings=json.loads(f.get("warnings") or "[]"),
        checkpoint=CheckpointRef.model_validate_json(f["checkpoint"]) if f.get("checkpoint") else None,
        handoffs=int(f.get("handoffs") or "0"),
    )
