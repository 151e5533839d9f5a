"""Job records in Redis: creation, reads, listing, and the fenced state transitions workers make.

What a record's hash holds, and how each field is written and read, is `producer.jobhash`; this module runs
the commands and scripts (producer/lua) that write and read it.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.commands.core import AsyncScript

from . import jobhash, keys, line
from .broker import Encoded
from .errors import IdempotencyConflictError, JobNotFoundError, ProducerError, QuotaExceededError
from .jobhash import JobField, Pricer
from .jobs import JobPage, JobRecord, JobRequest, JobStatus, Progress
from .outcomes import Claim, ClaimOutcome, Reap, ReapOutcome, SettleOutcome, Touch, TouchOutcome
from .scripts import lua_script

__all__ = [
    "QUOTA_RETRY_AFTER_S",
    "Claim",
    "CreateCall",
    "Created",
    "Idempotency",
    "JobStore",
    "Owner",
    "Reap",
    "Touch",
    "create_call",
    "create_refusal",
    "lua_script",
]

_SCRIPTS = ("claim", "touch", "settle", "cancel", "reap", "create", "expire")

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


class JobStore:
    """Reads and writes job records. Every transition is one atomic Lua call, fenced by the attempt number."""

    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._scripts = {name: client.register_script(_script(name)) for name in _SCRIPTS}
        self._async_scripts: dict[int, AsyncScript] = {}

    def create(
        self,
        job_id: str,
        request: JobRequest | Mapping[str, Any],
        *,
        warnings: Iterable[str] = (),
        owner: Owner | None = None,
        idempotency: Idempotency | None = None,
        message: Encoded | None = None,
        batch_id: str | None = None,
    ) -> Created:
        """Write a new `queued` record of a resolved request (or its JSON dump, `JobService.prepare`) and index it,
        in one atomic step (lua/create.lua).

        With an `owner`, the job belongs to its tenant and counts against its API key's queued-jobs quota
        (`QuotaExceededError`). With `idempotency`, a key that already produced a job returns that job
        (`created=False`) when the body hash matches, and raises `IdempotencyConflictError` when it does not.
        With `message`, the job's Dramatiq message is enqueued in the same step.
        """
        call = create_call(job_id, request, warnings, owner, idempotency, message, batch_id)
        outcome, detail, *rank = (jobhash.text(x) for x in self._scripts["create"](keys=call.keys, args=call.args))
        return self._created(call, outcome, detail, self.get, rank)

    async def create_async(
        self,
        aclient: redis.asyncio.Redis,
        job_id: str,
        request: JobRequest | Mapping[str, Any],
        *,
        owner: Owner | None = None,
        idempotency: Idempotency | None = None,
        message: Encoded | None = None,
    ) -> Created:
        """`create` over an asyncio client (the API's hot path: no thread hop, no blocked event loop)."""
        script = self._async_scripts.get(id(aclient))
        if script is None:
            script = self._async_scripts[id(aclient)] = aclient.register_script(_script("create"))
        call = create_call(job_id, request, (), owner, idempotency, message, None)
        outcome, detail, *rank = (jobhash.text(x) for x in await script(keys=call.keys, args=call.args))
        if outcome == "existing":  # rare: a retried request; read the first job's record
            raw = await aclient.hgetall(keys.job(detail))
            return Created(jobhash.record(jobhash.decode(raw)), created=False)
        return self._created(call, outcome, detail, self.get, rank)

    @staticmethod
    def _created(
        call: CreateCall, outcome: str, detail: str, get: Callable[[str], JobRecord], rank: Sequence[str] = ()
    ) -> Created:
        if outcome == "created":  # with its place in line, which the same step read
            return Created(jobhash.record(call.fields, rank=int(rank[0]) if rank else None), created=True)
        if outcome == "existing":
            return Created(get(detail), created=False)
        raise create_refusal(outcome, detail)

    def discard(self, job_id: str, *, idempotency_key: str | None = None) -> None:
        """Remove a record that was never enqueued (enqueueing failed), so no half-created job remains."""
        owned = self.client.hmget(keys.job(job_id), [JobField.TENANT.value, JobField.KEY_ID.value])
        tenant, key_id = (jobhash.text(v) if v else "" for v in owned)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(keys.job(job_id))
        for key in (keys.INDEX_ALL, *(keys.index(s.value) for s in JobStatus)):
            pipe.zrem(key, job_id)
        if tenant:
            for status in (None, *(s.value for s in JobStatus)):
                pipe.zrem(keys.tenant_index(tenant, status), job_id)
        if key_id:  # it was queued (never enqueued, never claimed): it leaves the key's queued count
            pipe.decr(keys.key_queued(key_id))
        if idempotency_key:
            pipe.delete(keys.idempotency(tenant, "jobs", idempotency_key))
        pipe.execute()

    def get(self, job_id: str, *, price: Pricer | None = None) -> JobRecord:
        """The record of `job_id` (priced by `price`, when given) with its place in line; raises
        `JobNotFoundError`. One round trip."""
        [(raw, rank)] = self._read_many([job_id])
        if not raw:
            raise JobNotFoundError(job_id)
        return jobhash.record(jobhash.decode(raw), price, rank=rank)

    def _read_many(self, job_ids: Iterable[str]) -> builtins.list[tuple[dict[bytes, bytes], int | None]]:
        """Each job's hash and its rank in the line (`producer.line`; O(log n) each), in one round trip and one
        atomic read (MULTI), so the places on a page agree with each other and with the statuses."""
        pipe = self.client.pipeline(transaction=True)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
            pipe.zrank(keys.LINE, job_id)
        answers = pipe.execute()
        return list(zip(answers[0::2], answers[1::2], strict=True))

    def fields(self, job_id: str) -> dict[str, str]:
        """Every field of the job's hash, for readers that need more than the record (`jobhash.JobField`, e.g.
        the webhook dispatcher's `key_id`); raises `JobNotFoundError`."""
        raw: dict[bytes, bytes] = self.client.hgetall(keys.job(job_id))  # type: ignore[assignment]
        if not raw:
            raise JobNotFoundError(job_id)
        return jobhash.decode(raw)

    def get_many(self, job_ids: Iterable[str], *, price: Pricer | None = None) -> list[JobRecord]:
        """The records of `job_ids` that still exist, in the same order (one round trip)."""
        found = self._read_many(job_ids)
        return [jobhash.record(jobhash.decode(fields), price, rank=rank) for fields, rank in found if fields]

    def cancel_many(self, job_ids: Iterable[str]) -> None:
        """`cancel` each job (one round trip): queued ones end at once, running ones are flagged."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            self._scripts["cancel"](keys=[keys.job(job_id)], args=[self.ttl_s], client=pipe)
        pipe.execute()

    def list(
        self,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
        price: Pricer | None = None,
    ) -> JobPage:
        """Newest first (only `tenant`'s jobs when given); `cursor` is the `next_cursor` of the previous page.

        Two round trips (the index, then every record of the page), each record priced by `price` from the
        hash already read."""
        state = status.value if status else None
        index = keys.index(state) if tenant is None else keys.tenant_index(tenant, state)
        upper = f"({int(cursor)}" if cursor else "+inf"
        rows: list[tuple[bytes, float]]
        if index == keys.LINE:  # scored by place in line: both lanes, by when each job entered the queue
            rows = line.newest(self.client, cursor, limit + 1)
        else:
            rows = self.client.zrevrangebyscore(  # type: ignore[assignment]
                index, upper, "-inf", start=0, num=limit + 1, withscores=True
            )
        more = len(rows) > limit
        rows = rows[:limit]
        records, expired = [], []
        for (member, _), (fields, rank) in zip(rows, self._read_many(m.decode() for m, _ in rows), strict=True):
            if fields:
                records.append(jobhash.record(jobhash.decode(fields), price, rank=rank))
            else:
                expired.append(member)
        if expired:  # records past their TTL: drop them from the index lazily
            self.client.zrem(index, *expired)
        next_cursor = str(int(rows[-1][1])) if more and rows else None
        return JobPage(jobs=records, next_cursor=next_cursor)

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued job or flag a running one; returns the status after the call."""
        status = jobhash.text(self._run("cancel", job_id, self.ttl_s))
        if status == "missing":
            raise JobNotFoundError(job_id)
        return JobStatus(status)

    # The worker's side: every write after `claim` carries the attempt number it got (a fencing token).

    def claim(self, job_id: str, *, worker: str, lease_s: float, max_attempts: int) -> Claim:
        """Take `job_id` for one attempt, counting attempts so a job that kills its worker cannot loop forever."""
        outcome, detail = (
            jobhash.text(x) for x in self._run("claim", job_id, worker, lease_s, max_attempts, self.ttl_s)
        )
        if outcome == ClaimOutcome.CLAIMED:
            return Claim(ClaimOutcome.CLAIMED, attempt=int(detail))
        if outcome == ClaimOutcome.BUSY:
            return Claim(ClaimOutcome.BUSY, retry_after_s=float(detail))
        return Claim(ClaimOutcome.SKIP, status=detail)

    def touch(self, job_id: str, attempt: int, *, lease_s: float, progress: Progress | None = None) -> Touch:
        """Renew the lease (and record progress); tells whether the attempt still holds the job."""
        return self.touch_many([(job_id, attempt, lease_s, progress)])[0]

    def touch_many(self, leases: Sequence[tuple[str, int, float, Progress | None]]) -> Sequence[Touch]:
        """`touch` for several (job id, attempt, lease_s, progress) at once: one round trip for all of them."""
        pipe = self.client.pipeline(transaction=False)
        for job_id, attempt, lease_s, progress in leases:
            payload = jobhash.encode({"progress": progress}).get(JobField.PROGRESS.value, "")
            self._scripts["touch"](keys=[keys.job(job_id)], args=[attempt, lease_s, payload], client=pipe)
        touches: builtins.list[Touch] = []
        for result in pipe.execute():
            outcome, detail = (jobhash.text(x) for x in result)
            if outcome != "ok":
                touches.append(Touch(TouchOutcome.LOST))
            else:
                touches.append(Touch(TouchOutcome.CANCEL_REQUESTED if detail == "1" else TouchOutcome.HELD))
        return touches

    def settle(self, job_id: str, attempt: int, status: JobStatus, **fields: Any) -> SettleOutcome:
        """End the attempt with `status` (terminal, or `queued` to hand the job back); `LOST` (falsy) if fenced off.

        `fields` are `JobRecord` attributes the attempt sets (outputs, timings, error, warnings, worker,
        checkpoint, handoffs), encoded by `jobhash`."""
        flat = [item for pair in jobhash.encode(fields).items() for item in pair]
        result = self._run("settle", job_id, attempt, status.value, self.ttl_s, *flat)
        return SettleOutcome(jobhash.text(result))

    # The janitor's side (producer/controller/janitor.py).

    def reap(self, job_id: str, attempt: int, *, grace_s: float, max_attempts: int, note: str) -> Reap:
        """End `attempt` if its lease expired over `grace_s` ago: requeue the job, or fail it (`worker_lost`) once
        it has run `max_attempts` times. Fenced like `settle`; `note` is added to the job's warnings."""
        outcome, detail = (
            jobhash.text(x) for x in self._run("reap", job_id, attempt, grace_s, max_attempts, self.ttl_s, note)
        )
        return Reap(ReapOutcome(outcome), detail)

    def unindex_expired(self, *, chunk: int = 1000, max_chunks: int = 20) -> int:
        """Take finished jobs whose records expired out of every index (the janitor's tick runs it): the cost of
        what expired since the last call, `chunk` per Lua call. Returns how many it unindexed."""
        total = 0
        for _ in range(max_chunks):
            unindexed, looked_at = self._scripts["expire"](keys=[], args=[time.time(), chunk])
            total += int(unindexed)
            if int(looked_at) < chunk:
                break
        return total

    def leases(self, job_ids: Sequence[str]) -> builtins.list[tuple[float, int | None, str | None]]:
        """(lease_until, attempts, status) of each job, in one round trip: what the janitor sweeps by."""
        pipe = self.client.pipeline(transaction=False)
        wanted = [JobField.LEASE_UNTIL.value, JobField.ATTEMPTS.value, JobField.STATUS.value]
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), wanted)
        found = []
        for lease, attempts, status in pipe.execute():
            found.append(
                (
                    float(lease or 0),
                    int(attempts) if attempts is not None else None,
                    jobhash.text(status) if status is not None else None,
                )
            )
        return found

    def _run(self, script: str, job_id: str, *args: str | int | float) -> Any:
        """Run one of the Lua scripts on the job's key."""
        return self._scripts[script](keys=[keys.job(job_id)], args=list(args))


def create_refusal(outcome: str, detail: str) -> ProducerError:
    """The error for lua/_create.lua's `mismatch` (another body under the Idempotency-Key) or `quota` answer."""
    if outcome == "mismatch":
        return IdempotencyConflictError(
            f"Idempotency-Key was already used for job {detail} with a different request body"
        )
    return QuotaExceededError(
        f"this API key already has {detail} queued jobs, its quota; retry when some have started",
        retry_after_s=QUOTA_RETRY_AFTER_S,
    )


def _script(name: str) -> str:
    return lua_script(name, helpers=("_create",) if name == "create" else ())


@dataclass(frozen=True)
class CreateCall:
    """What lua/create.lua is called with for one job (`keys`, `args`), and the record `fields` it writes."""

    keys: list[str]
    args: list[Any]
    fields: dict[str, str]


def create_call(
    job_id: str,
    request: JobRequest | Mapping[str, Any],
    warnings: Iterable[str],
    owner: Owner | None,
    idempotency: Idempotency | None,
    message: Encoded | None,
    batch_id: str | None,
) -> CreateCall:
    """The keys and arguments of lua/create.lua for one job, and the record fields it writes."""
    owner = owner or Owner()
    fields = jobhash.new_job(
        job_id,
        request,
        created_at=time.time(),
        tenant=owner.tenant,
        key_id=owner.key_id,
        batch_id=batch_id,
        warnings=warnings,
    )
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
        message.wake_channel if message else "",
        *(item for pair in fields.items() for item in pair),
    ]
    return CreateCall(call_keys, args, fields)
