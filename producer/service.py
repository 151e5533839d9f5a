"""Submitting, reading and cancelling jobs: what the HTTP API and direct callers share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from dramatiq.brokers.redis import RedisBroker

from .broker import GENERATE_ACTOR, Encoded, encode, send
from .catalog import Catalog, load_catalog
from .errors import JobConflictError, JobNotFoundError, QueueUnavailableError, write_failed
from .idempotency import body_hash
from .jobhash import Pricer
from .jobs import JobMessage, JobPage, JobRecord, JobRequest, JobStatus, new_job_id
from .source_policy import SourcePolicy, policy_from
from .store import Created, Idempotency, JobStore, Owner
from .webhooks.ssrf import UrlPolicy, check_url_shape


@dataclass(frozen=True)
class NewJob:
    """A job ready to be written: its id, its resolved request as JSON data, and its Dramatiq message if encoded.
    Its record fields are `jobhash.new_job(job_id, request, ...)`."""

    job_id: str
    request: dict[str, Any]
    message: Encoded | None
    #: The request as validated and shaped, before `resolution` (a fresh model and seed) was applied to its dump.
    shaped: JobRequest | None = None
    resolution: dict[str, Any] | None = None

    def resolved(self) -> JobRequest:
        """The request the record holds, as a model: the shaped one with its resolution (no re-validation of the
        dump that was written; `JobRequest.resolved` does the same)."""
        assert self.shaped is not None and self.resolution is not None
        return self.shaped.model_copy(update=self.resolution)

    @property
    def payload(self) -> JobMessage:
        """The message's payload as the model (for sending it through the broker instead)."""
        return JobMessage.model_validate(JobMessage.wire(self.job_id, self.request))


class JobService:
    """Validates, records and enqueues jobs. A job is either recorded *and* enqueued, or not at all."""

    def __init__(
        self,
        store: JobStore,
        broker: RedisBroker,
        *,
        queue: str,
        default_model: str,
        allowed_models: frozenset[str] = frozenset(),
        url_policy: UrlPolicy | None = None,
        catalog: Catalog | None = None,
        sources: SourcePolicy | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.queue = queue
        self.default_model = default_model
        #: The model catalog: its models' defaults fill what a request omits, and their limits are checked here.
        self.catalog = catalog or load_catalog(None)
        #: What a job may name as its model, LoRAs and adapters (`producer.source_policy`); without `sources`,
        #: `allowed_models` alone, open to paths and storage URLs (direct callers, tests).
        self.sources = sources or policy_from(
            allowed_models=allowed_models, allowed_loras=(), strict=False, catalog=self.catalog
        )
        #: What webhook URLs may look like (`SDQ_WEBHOOK_HTTPS_ONLY`, `SDQ_WEBHOOK_ALLOW`); checked again, with DNS,
        #: before every delivery.
        self.url_policy = url_policy or UrlPolicy()
        self._one_redis = _same_redis(store.client, broker.client)

    @property
    def one_redis(self) -> bool:
        """Whether the job store and the queue share one Redis (every deployment `open_backends` makes): a job's
        record and its message are then written in one atomic step."""
        return self._one_redis

    def submit(
        self, request: JobRequest, *, owner: Owner | None = None, idempotency_key: str | None = None
    ) -> JobRecord:
        """Record and enqueue a job; raises `ModelNotAllowedError` or `QueueUnavailableError`."""
        return self.submit_once(request, owner=owner, idempotency_key=idempotency_key).record

    def submit_once(
        self, request: JobRequest, *, owner: Owner | None = None, idempotency_key: str | None = None
    ) -> Created:
        """`submit`, telling whether the job is new or the one `idempotency_key` already produced.

        The owner's queued-jobs quota (`QuotaExceededError`) and the key (`IdempotencyConflictError` for another
        body) are checked in the same atomic step that records the job."""
        # The record, its indexes and its Dramatiq message in one atomic step (when the queue lives in the same
        # Redis, as it does in every deployment `open_backends` makes): all or nothing, one round trip.
        new = self.prepare(request, encode_message=self._one_redis)
        try:
            created = self.store.create(
                new.job_id,
                new.request,
                owner=owner,
                idempotency=_idempotency(request, idempotency_key),
                message=new.message,
            )
        except redis.RedisError as exc:
            raise write_failed(exc) from exc
        if new.message is not None or not created.created:
            return created
        try:
            send(self.broker, self.queue, new.payload)
        except Exception as exc:
            # Never leave a record that no message will ever run.
            try:
                self.store.discard(new.job_id, idempotency_key=idempotency_key)
            finally:
                raise QueueUnavailableError(f"the queue is unreachable: {exc}") from exc
        return created

    async def submit_once_async(
        self,
        aclient: redis.asyncio.Redis,
        request: JobRequest,
        *,
        owner: Owner | None = None,
        idempotency_key: str | None = None,
    ) -> Created:
        """`submit_once` over an asyncio client on the same Redis (the API's hot path)."""
        if not self._one_redis:
            return await asyncio.to_thread(self.submit_once, request, owner=owner, idempotency_key=idempotency_key)
        new = self.prepare(request)
        try:
            return await self.store.create_async(
                aclient,
                new.job_id,
                new.request,
                owner=owner,
                idempotency=_idempotency(request, idempotency_key),
                message=new.message,
            )
        except redis.RedisError as exc:
            raise write_failed(exc) from exc

    def prepare(
        self,
        request: JobRequest,
        *,
        queue: str | None = None,
        actor: str = GENERATE_ACTOR,
        encode_message: bool = True,
        message_id_is_job_id: bool = True,
        timestamp_ms: int | None = None,
    ) -> NewJob:
        """What every new job goes through, alone or in a batch: the checks that need no Redis
        (`ModelNotAllowedError`, `ModelLimitError`, `WebhookUrlError`), its catalog model's defaults (`shape`), a
        fresh id, the request resolved (`JobRequest.resolution`)
        and its Dramatiq message for `queue` (this service's queue by default) encoded.

        The request is dumped once and resolved on that dump, not copied and re-validated: a batch of 10 000 jobs
        runs this 10 000 times (see bench/api.py, `batch_jobs_per_s`)."""
        request = self.shape(request)  # its catalog model's defaults and limits
        if request.webhook_url:
            check_url_shape(request.webhook_url, self.url_policy)  # WebhookUrlError: 422 on `webhook_url`
        job_id = new_job_id()
        resolved = request.model_dump(mode="json")
        resolution = request.resolution(self.default_model)
        resolved.update(resolution)
        if not encode_message:
            return NewJob(job_id, resolved, None, request, resolution)
        message = encode(
            self.broker,
            queue or self.queue,
            JobMessage.wire(job_id),  # the worker reads the request from the record (see JobMessage)
            actor=actor,
            redis_id=job_id if message_id_is_job_id else None,
            timestamp_ms=timestamp_ms,
        )
        return NewJob(job_id, resolved, message, request, resolution)

    def shape(self, request: JobRequest) -> JobRequest:
        """`request` for a model this deployment serves, its model named and its catalog model's defaults in the
        fields it omitted; raises `ModelNotAllowedError`, or `ModelLimitError` naming each field its model cannot
        serve (`producer.catalog`)."""
        self.check_model(request)
        if request.model is None:
            request = request.model_copy(update={"model": self.default_model})
        # `@catalog` in SDQ_ALLOWED_MODELS binds ControlNets and IP-Adapters to their model's catalog lists too.
        return self.catalog.apply(request, listed_adapters_only=self.sources.models.catalog)

    def check_model(self, request: JobRequest) -> None:
        """Raise `ModelNotAllowedError` (a `SourceNotAllowedError` naming the field) when the request names a model,
        LoRA or adapter source this deployment does not allow."""
        self.sources.check(request, default_model=self.default_model)

    def get(self, job_id: str, *, tenant: str | None = None, price: Pricer | None = None) -> JobRecord:
        """The job's record (priced by `price`, when given); raises `JobNotFoundError` (also for a job of another
        tenant than `tenant`)."""
        record = self.store.get(job_id, price=price)
        if tenant is not None and record.tenant != tenant:
            raise JobNotFoundError(job_id)
        return record

    def list(
        self,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
        price: Pricer | None = None,
    ) -> JobPage:
        """A page of jobs, newest first (only `tenant`'s when given), each priced by `price` when given."""
        return self.store.list(status=status, limit=limit, cursor=cursor, tenant=tenant, price=price)

    def cancel(self, job_id: str, *, tenant: str | None = None) -> JobRecord:
        """Cancel a queued job, or ask a running one to stop; raises `JobConflictError` for a finished job."""
        if tenant is not None:
            self.get(job_id, tenant=tenant)  # another tenant's job is not found, not canceled
        status = self.store.cancel(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            raise JobConflictError(f"job {job_id} already {status.value}; nothing to cancel")
        return self.store.get(job_id)


def _idempotency(request: JobRequest, key: str | None) -> Idempotency | None:
    """The key with the hash of the body as the client sent it (before the server resolved anything)."""
    return Idempotency(key, body_hash(request.model_dump_json().encode())) if key else None


def _same_redis(a: redis.Redis, b: redis.Redis) -> bool:
    """Whether two clients talk to the same Redis database."""
    if a is b:
        return True
    where = ("host", "port", "db", "path")
    ka, kb = a.connection_pool.connection_kwargs, b.connection_pool.connection_kwargs
    return all(ka.get(k) == kb.get(k) for k in where)
