"""Submitting, reading and cancelling jobs: what the HTTP API and direct callers share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis
import redis.asyncio
from dramatiq.brokers.redis import RedisBroker

from .broker import encode, job_message, send
from .catalog import Catalog, load_catalog
from .errors import JobConflictError, JobNotFoundError, ModelNotAllowedError, QueueUnavailableError
from .idempotency import body_hash
from .jobs import JobMessage, JobPage, JobRecord, JobRequest, JobStatus, WebhookEventType, new_job_id
from .store import Created, Idempotency, JobStore, Owner
from .webhooks.ssrf import UrlPolicy, check_url_shape


@dataclass(frozen=True)
class _NewJob:
    payload: JobMessage
    idempotency: Idempotency | None
    extra: dict[str, str]


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
    ) -> None:
        self.store = store
        self.broker = broker
        self.queue = queue
        self.default_model = default_model
        #: The model catalog: its models' defaults fill what a request omits, and their limits are checked here.
        self.catalog = catalog or load_catalog(None)
        self.allowed_models = self.catalog.allowed(sorted(allowed_models))
        #: What webhook URLs may look like (`SDQ_WEBHOOK_HTTPS_ONLY`, `SDQ_WEBHOOK_ALLOW`); checked again, with DNS,
        #: before every delivery.
        self.url_policy = url_policy or UrlPolicy()
        self._one_redis = _same_redis(store.client, broker.client)

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
        new = self._new_job(request, idempotency_key)
        # The record, its indexes and its Dramatiq message in one atomic step (when the queue lives in the same
        # Redis, as it does in every deployment `open_backends` makes): all or nothing, one round trip.
        message = encode(self.broker, job_message(self.queue, new.payload)) if self._one_redis else None
        try:
            created = self.store.create(
                new.payload.job_id,
                new.payload.request,
                owner=owner,
                idempotency=new.idempotency,
                message=message,
                extra=new.extra,
            )
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"the job store is unreachable; nothing was enqueued: {exc}") from exc
        if message is not None or not created.created:
            return created
        try:
            send(self.broker, self.queue, new.payload)
        except Exception as exc:
            # Never leave a record that no message will ever run.
            try:
                self.store.discard(new.payload.job_id, idempotency_key=idempotency_key)
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
        new = self._new_job(request, idempotency_key)
        message = encode(self.broker, job_message(self.queue, new.payload))
        try:
            return await self.store.create_async(
                aclient,
                new.payload.job_id,
                new.payload.request,
                owner=owner,
                idempotency=new.idempotency,
                message=message,
                extra=new.extra,
            )
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"the job store is unreachable; nothing was enqueued: {exc}") from exc

    def _new_job(self, request: JobRequest, idempotency_key: str | None) -> _NewJob:
        """Checks that need no Redis, then the job's id, resolved request and record fields."""
        idempotency = (
            Idempotency(idempotency_key, body_hash(request.model_dump_json().encode())) if idempotency_key else None
        )
        resolved = self.shape(request).resolved(self.default_model)
        if resolved.webhook_url:
            check_url_shape(resolved.webhook_url, self.url_policy)  # WebhookUrlError: 422 on `webhook_url`
        extra = {}
        if resolved.webhook_url:  # the job's transitions feed the webhook stream (see JobStore.enable_hooks)
            extra["hooks"] = "2" if WebhookEventType.JOB_PROGRESS in resolved.wanted_webhook_events else "1"
        return _NewJob(JobMessage(job_id=new_job_id(), request=resolved), idempotency, extra)

    def shape(self, request: JobRequest) -> JobRequest:
        """`request` for a model this deployment serves, its model named and its catalog model's defaults in the
        fields it omitted; raises `ModelNotAllowedError`, or `ModelLimitError` naming each field its model cannot
        serve (`producer.catalog`)."""
        self.check_model(request)
        if request.model is None:
            request = request.model_copy(update={"model": self.default_model})
        return self.catalog.apply(request)

    def check_model(self, request: JobRequest) -> None:
        """Raise `ModelNotAllowedError` when the request asks for a model this deployment does not serve."""
        model = request.model or self.default_model
        if self.allowed_models and model not in self.allowed_models:
            raise ModelNotAllowedError(
                f"model {model!r} is not served here; choose one of {sorted(self.allowed_models)}"
            )

    def get(self, job_id: str, *, tenant: str | None = None) -> JobRecord:
        """The job's record; raises `JobNotFoundError` (also for a job of another tenant than `tenant`)."""
        record = self.store.get(job_id)
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
    ) -> JobPage:
        """A page of jobs, newest first (only `tenant`'s when given)."""
        return self.store.list(status=status, limit=limit, cursor=cursor, tenant=tenant)

    def cancel(self, job_id: str, *, tenant: str | None = None) -> JobRecord:
        """Cancel a queued job, or ask a running one to stop; raises `JobConflictError` for a finished job."""
        if tenant is not None:
            self.get(job_id, tenant=tenant)  # another tenant's job is not found, not canceled
        status = self.store.cancel(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            raise JobConflictError(f"job {job_id} already {status.value}; nothing to cancel")
        return self.store.get(job_id)


def _same_redis(a: redis.Redis, b: redis.Redis) -> bool:
    """Whether two clients talk to the same Redis database."""
    if a is b:
        return True
    where = ("host", "port", "db", "path")
    ka, kb = a.connection_pool.connection_kwargs, b.connection_pool.connection_kwargs
    return all(ka.get(k) == kb.get(k) for k in where)
