"""Batches: thousands of jobs in one request, validated together, enqueued together, tracked together.

A batch is all or nothing: every item is validated (shared defaults merged under it) before anything is written,
and the records, their indexes and the Dramatiq messages go to Redis in one MULTI/EXEC transaction, so a client
never sees half a batch. Batch jobs travel on the batch queue, which workers drain only when no interactive job
waits. Counts by status are kept by the same Lua step that moves a job (lua/_moved.lua), so reading a batch of
10 000 jobs costs one HGETALL; the jobs that finished are appended to a feed clients follow by offset.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import chain
from typing import Any

import redis
from pydantic import ValidationError
from pydantic_core import to_json

from . import jobhash, keys
from .batch_body import MAX_REPORTED_ERRORS, BatchValidationError
from .broker import BATCH_ACTOR, GENERATE_ACTOR
from .cost import CostCalculator
from .doorbell import wake_channel
from .errors import (
    BatchNotFoundError,
    IdempotencyConflictError,
    ModelLimitError,
    ModelNotAllowedError,
    QuotaExceededError,
    write_failed,
)
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import TTL_S as IDEMPOTENCY_TTL_S
from .idempotency import body_hash
from .jobhash import Pricer
from .jobs import (
    CONTRACT_VERSION,
    BatchCounts,
    BatchCreated,
    BatchJobPage,
    BatchRecord,
    BatchRequest,
    BatchStatus,
    JobRequest,
    JobStatus,
)
from .scripts import lua_script
from .service import JobService
from .store import QUOTA_RETRY_AFTER_S, Owner
from .webhooks.ssrf import check_url_shape

_CHUNK = 2000


class ReplayedError(Exception):
    """An inbound webhook-id was accepted before; `job_ids` are what it made (comma-separated)."""

    def __init__(self, job_ids: str) -> None:
        super().__init__(job_ids)
        self.job_ids = job_ids


def new_batch_id() -> str:
    """A fresh, unguessable batch id (32 lowercase hex characters, like a job id)."""
    return uuid.uuid4().hex


def validate_items(batch: BatchRequest) -> list[JobRequest]:
    """Every item as a `JobRequest` (defaults merged under it); raises `BatchValidationError` naming each bad item."""
    defaults = batch.defaults
    if defaults:
        try:
            JobRequest.model_validate({"prompt": "defaults", **defaults})
        except ValidationError as exc:
            raise BatchValidationError([_field(e, "defaults") for e in exc.errors()]) from None
    requests: list[JobRequest] = []
    errors: list[dict[str, str]] = []
    bad = 0
    for index, item in enumerate(batch.items):
        try:
            requests.append(JobRequest.model_validate({**defaults, **item} if defaults else item))
        except ValidationError as exc:
            bad += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.extend(_field(e, f"items.{index}") for e in exc.errors())
    if errors:
        raise BatchValidationError(errors[:MAX_REPORTED_ERRORS], bad_items=bad)
    return requests


def _field(error: Any, prefix: str = "") -> dict[str, str]:
    from .field_errors import field_error

    return field_error(error, prefix=prefix)


class BatchService:
    """Creates, reads, pages through and cancels batches."""

    def __init__(self, jobs: JobService, *, queue: str, cost: CostCalculator | None = None) -> None:
        self.jobs = jobs
        self.client: redis.Redis = jobs.store.client
        self.queue = queue
        self.cost = cost
        self._script = self.client.register_script(lua_script("batch"))

    def create(
        self, batch: BatchRequest, *, owner: Owner | None = None, idempotency_key: str | None = None
    ) -> tuple[BatchCreated, bool]:
        """Validate every item, then record and enqueue them all in one transaction; returns the batch and whether
        it is new (False: the batch `idempotency_key` already made). Raises `BatchValidationError`,
        `ModelNotAllowedError`, `QuotaExceededError`, `IdempotencyConflictError`, `QueueUnavailableError`."""
        owner = owner or Owner()
        requests = validate_items(batch)
        if batch.webhook_url:
            try:
                check_url_shape(batch.webhook_url, self.jobs.url_policy)
            except ValueError as exc:
                raise BatchValidationError([{"field": "webhook_url", "message": str(exc)}]) from None
        batch_id = new_batch_id()
        now = time.time()
        jobs = self._prepare(batch_id, requests, owner, now)
        idem = None
        if idempotency_key:  # checked and set by the same atomic step that writes the batch: no claim can dangle
            digest = body_hash(batch.model_dump_json().encode())
            name = keys.idempotency(owner.tenant, "batches", idempotency_key)
            idem = {"key": name, "value": f"{batch_id} {digest}", "digest": digest, "ttl_s": IDEMPOTENCY_TTL_S}
        fields = {
            "id": batch_id,
            "v": str(CONTRACT_VERSION),
            "tenant": owner.tenant,
            "key_id": owner.key_id,
            "created_at": repr(now),
            "total": str(len(jobs)),
            "metadata": json.dumps(batch.metadata),
            "cancel": "0",
            **{status.value: "0" for status in JobStatus},
        }
        fields[JobStatus.QUEUED.value] = str(len(jobs))
        if batch.webhook_url:  # read by lua/_moved.lua when the last job ends (batch.completed)
            fields["webhook_url"] = batch.webhook_url
        document = {"id": batch_id, "batch": True, "fields": [i for pair in fields.items() for i in pair]}
        if idem is not None:
            document["idem"] = idem
        outcome, detail = self._write(self.queue, document, jobs, owner, now)
        if outcome == "existing":
            return self._existing(detail, owner.tenant), False
        if outcome == "mismatch":
            raise IdempotencyConflictError(
                f"{IDEMPOTENCY_HEADER} was already used for batch {detail} with a different request body"
            )
        return BatchCreated(**_batch_record(fields, cost=None).model_dump(), job_ids=[job[0] for job in jobs]), True

    def create_jobs(self, requests: Sequence[JobRequest], *, owner: Owner, seen_key: str, seen_ttl_s: int) -> list[str]:
        """Jobs that are not a batch (an inbound webhook's list), all or nothing in one atomic step, in the
        interactive lane of the jobs queue; `seen_key` (the webhook-id) is set in the same step, so a delivery
        refused half-way (quota, Redis) creates nothing and its retry goes through. Returns the job ids; raises
        `QuotaExceededError`, `QueueUnavailableError`, `ModelNotAllowedError`, `ModelLimitError`, and
        `ReplayedError` (with the ids the webhook-id made) when it was accepted before."""
        now = time.time()
        jobs = self._prepare(None, requests, owner, now, queue=self.jobs.queue)
        document = {"id": "", "batch": False, "fields": [], "seen": {"key": seen_key, "ttl_s": seen_ttl_s}}
        outcome, detail = self._write(self.jobs.queue, document, jobs, owner, now)
        if outcome == "replayed":
            raise ReplayedError(detail)
        return [job[0] for job in jobs]

    def _existing(self, batch_id: str, tenant: str) -> BatchCreated:
        record = self.get(batch_id, tenant=tenant or None)
        job_ids = [_text(i) for i in self.client.lrange(keys.batch_jobs(batch_id), 0, -1)]
        return BatchCreated(**record.model_dump(), job_ids=job_ids)

    def _write(
        self, queue: str, document: dict[str, Any], jobs: list[list[str]], owner: Owner, now: float
    ) -> tuple[str, str]:
        # One Lua call writes everything (records, indexes, messages, the batch): all or nothing. Packing
        # 10 000 HSETs through redis-py costs ~30 µs of Python each; one JSON document costs ~1.
        queue_key = f"{self.jobs.broker.namespace}:{queue}"
        document = {
            **document,
            "tenant": owner.tenant,
            "key_id": owner.key_id,
            "max_queued": owner.max_queued,
            "created_at": now,
            "wake": wake_channel(queue_key),
            "jobs": jobs,
        }
        self.jobs.broker.declare_queue(queue)
        try:
            reply = self._script(keys=[queue_key, queue_key + ".msgs"], args=[to_json(document)])
        except redis.RedisError as exc:
            raise write_failed(exc, "the queue") from exc
        outcome, detail = (_text(x) for x in reply)
        if outcome == "quota":
            raise QuotaExceededError(
                f"this API key has {detail} queued jobs; {len(jobs)} more would pass its quota of {owner.max_queued}",
                retry_after_s=QUOTA_RETRY_AFTER_S,
            )
        return outcome, detail

    def _prepare(
        self, batch_id: str | None, requests: Sequence[JobRequest], owner: Owner, now: float, *, queue: str = ""
    ) -> list[list[str]]:
        """Per job: [id, Dramatiq message body, record field, value, ...] (the record without its sequence), each
        made as a single job is (`JobService.prepare`, `jobhash.new_job`). A batch's (`batch_id`) raise
        `BatchValidationError` naming `items.<index>.<field>`; other jobs raise what a single job's would."""
        timestamp_ms = int(now * 1000)
        actor = BATCH_ACTOR if batch_id else GENERATE_ACTOR
        jobs = []
        for index, request in enumerate(requests):
            try:
                # The job id doubles as its Redis message id (unique per enqueue: Dramatiq gives retries fresh ids).
                new = self.jobs.prepare(
                    request,
                    queue=queue or self.queue,
                    actor=actor,
                    message_id_is_job_id=True,
                    timestamp_ms=timestamp_ms,
                )
            except (ModelNotAllowedError, ModelLimitError) as exc:
                if batch_id is None:
                    raise
                fields = [{**field, "field": f"items.{index}.{field['field']}"} for field in exc.client_fields()]
                raise BatchValidationError(fields) from None
            except ValueError as exc:  # the item's webhook URL (WebhookUrlError)
                if batch_id is None:
                    raise
                raise BatchValidationError([{"field": f"items.{index}.webhook_url", "message": str(exc)}]) from None
            assert new.message is not None
            record = jobhash.new_job(
                new.job_id, new.request, created_at=now, tenant=owner.tenant, key_id=owner.key_id, batch_id=batch_id
            )
            jobs.append([new.job_id, new.message.body.decode(), *chain.from_iterable(record.items())])
        return jobs

    def get(self, batch_id: str, *, tenant: str | None = None) -> BatchRecord:
        """The batch with its counts and cost so far; raises `BatchNotFoundError` (also for another tenant's)."""
        fields = self._fields(batch_id, tenant)
        cost = None
        if self.cost is not None and int(fields.get("succeeded", 0)) + int(fields.get("failed", 0)):
            job_ids = [_text(i) for i in self.client.lrange(keys.batch_jobs(batch_id), 0, -1)]
            cost = self.cost.jobs(job_ids).total_usd
        return _batch_record(fields, cost=cost)

    def finished_jobs(
        self, batch_id: str, *, tenant: str | None, offset: int, limit: int, price: Pricer | None = None
    ) -> BatchJobPage:
        """Finished jobs of the batch in the order they finished, from `offset` on (priced by `price`)."""
        self._fields(batch_id, tenant)
        ids = [_text(i) for i in self.client.lrange(keys.batch_done(batch_id), offset, offset + limit - 1)]
        return BatchJobPage(jobs=self.jobs.store.get_many(ids, price=price), next_offset=offset + len(ids))

    def cancel(self, batch_id: str, *, tenant: str | None = None) -> BatchRecord:
        """Cancel every job of the batch that has not finished: queued ones never run, running ones stop."""
        self._fields(batch_id, tenant)
        self.client.hset(keys.batch(batch_id), "cancel", "1")
        length = int(self.client.llen(keys.batch_jobs(batch_id)))
        for start in range(0, length, _CHUNK):
            ids = [_text(i) for i in self.client.lrange(keys.batch_jobs(batch_id), start, start + _CHUNK - 1)]
            self.jobs.store.cancel_many(ids)
        return self.get(batch_id, tenant=tenant)

    def _fields(self, batch_id: str, tenant: str | None) -> dict[str, str]:
        raw: dict[bytes, bytes] = self.client.hgetall(keys.batch(batch_id))  # type: ignore[assignment]
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "id" not in fields or (tenant is not None and fields.get("tenant") != tenant):
            raise BatchNotFoundError(batch_id)
        return fields


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _batch_record(f: dict[str, str], *, cost: float | None) -> BatchRecord:
    counts = BatchCounts(**{status.value: max(0, int(f.get(status.value, 0))) for status in JobStatus})
    total = int(f["total"])
    finished = counts.succeeded + counts.failed + counts.canceled
    return BatchRecord(
        id=f["id"],
        status=BatchStatus.COMPLETED if finished >= total else BatchStatus.RUNNING,
        total=total,
        counts=counts,
        progress=finished / total if total else 1.0,
        cost_usd=cost,
        created_at=datetime.fromtimestamp(float(f["created_at"]), tz=timezone.utc),
        cancel_requested=f.get("cancel") == "1",
        tenant=f.get("tenant") or None,
        metadata=json.loads(f.get("metadata") or "{}"),
    )
