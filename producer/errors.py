"""The producer's errors."""

from __future__ import annotations


class ProducerError(Exception):
    """Root of every error the producer package raises."""


class JobNotFoundError(ProducerError, LookupError):
    """No job with that id (or it belongs to someone else, or its record expired)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class QueueUnavailableError(ProducerError):
    """Redis (the queue or the job store) could not be reached; nothing was enqueued."""


class ModelNotAllowedError(ProducerError, ValueError):
    """The job asks for a model this deployment does not serve."""


class JobConflictError(ProducerError):
    """The job is in a state that does not allow the operation (e.g. cancelling a finished job)."""


class WebhookUrlError(ProducerError, ValueError):
    """A URL the server was asked to call is refused (SSRF guard: scheme, private or metadata address)."""


class BatchNotFoundError(ProducerError, LookupError):
    """No batch with that id (or it belongs to another tenant, or it expired)."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch {batch_id!r}")
        self.batch_id = batch_id


class AuthenticationError(ProducerError):
    """The request carries no valid API key where one is required."""


class RateLimitedError(ProducerError):
    """The API key sent requests faster than its rate limit allows; retry after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceededError(RateLimitedError):
    """The API key has as many queued jobs as its quota allows; nothing was enqueued."""


class IdempotencyConflictError(ProducerError):
    """An `Idempotency-Key` was reused with a different request body (or its first request is still running)."""

    def __init__(self, message: str, *, in_progress: bool = False) -> None:
        super().__init__(message)
        self.in_progress = in_progress
