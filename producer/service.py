"""Submitting, reading and cancelling jobs: what the HTTP API and direct callers share."""

from __future__ import annotations

import redis
from dramatiq.brokers.redis import RedisBroker

from .broker import send
from .errors import JobConflictError, ModelNotAllowedError, QueueUnavailableError
from .jobs import JobMessage, JobPage, JobRecord, JobRequest, JobStatus, new_job_id
from .store import JobStore

_WEBHOOKS_NOT_ENABLED = "webhook delivery is not enabled on this server yet: webhook_url was recorded, not called"


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
    ) -> None:
        self.store = store
        self.broker = broker
        self.queue = queue
        self.default_model = default_model
        self.allowed_models = allowed_models

    def submit(self, request: JobRequest) -> JobRecord:
        """Record and enqueue a job; raises `ModelNotAllowedError` or `QueueUnavailableError`."""
        resolved = request.resolved(self.default_model)
        if self.allowed_models and resolved.model not in self.allowed_models:
            raise ModelNotAllowedError(
                f"model {resolved.model!r} is not served here; choose one of {sorted(self.allowed_models)}"
            )
        job_id = new_job_id()
        payload = JobMessage(job_id=job_id, request=resolved)
        warnings = [_WEBHOOKS_NOT_ENABLED] if resolved.webhook_url else []
        try:
            record = self.store.create(job_id, resolved, warnings=warnings)
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"the job store is unreachable: {exc}") from exc
        try:
            send(self.broker, self.queue, payload)
        except Exception as exc:
            # Never leave a record that no message will ever run.
            try:
                self.store.discard(job_id)
            finally:
                raise QueueUnavailableError(f"the queue is unreachable: {exc}") from exc
        return record

    def get(self, job_id: str) -> JobRecord:
        """The job's record; raises `JobNotFoundError`."""
        return self.store.get(job_id)

    def list(self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None) -> JobPage:
        """A page of jobs, newest first."""
        return self.store.list(status=status, limit=limit, cursor=cursor)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job, or ask a running one to stop; raises `JobConflictError` for a finished job."""
        status = self.store.cancel(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            raise JobConflictError(f"job {job_id} already {status.value}; nothing to cancel")
        return self.store.get(job_id)
