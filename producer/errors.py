"""The producer's errors, each with the HTTP status and error code the API answers it with.

`producer/api/errors.py` turns any `ProducerError` into `{"error": {"code", "message", "fields"?}}` from these
attributes alone, so a new error is one class here, not one more handler there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import redis

from .jobs.enums import ErrorCode


class ProducerError(Exception):
    """Root of every error the producer package raises.

    `status_code` and `code` are what the API answers; 500 (the default) means a bug: the API then answers an
    incident number and never the message."""

    status_code: int = 500
    code: str = "internal"

    def client_message(self) -> str:
        """The `error.message` a client sees."""
        return str(self)

    def client_fields(self) -> list[dict[str, str]] | None:
        """The `error.fields` a client sees (`[{"field", "message"}]`), or None for an error about no field."""
        return None

    def client_headers(self) -> dict[str, str] | None:
        """Response headers that go with the error (`Retry-After`, `WWW-Authenticate`), or None."""
        return None


class ConfigurationError(ProducerError, ValueError):
    """A setting, option or file given to a command is wrong; the message names it and says what to do.

    Raised while a process starts, never while it serves: the CLI prints it and exits 2 (status 500 because an API
    that met one mid-request would have a bug)."""


def _shown(given: str, limit: int = 64) -> str:
    """`given` (an id from a request path) as an error message echoes it: quoted, and cut short past `limit`
    characters (an id is 32; a 10 KB "id" does not come back as a 10 KB message)."""
    return repr(given) if len(given) <= limit else f"{given[:limit]!r}… ({len(given)} characters)"


class JobNotFoundError(ProducerError, LookupError):
    """No job with that id (or it belongs to someone else, or its record expired)."""

    status_code = 404
    code = "not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {_shown(job_id)}")
        self.job_id = job_id


class QueueUnavailableError(ProducerError):
    """Redis (the queue or the job store) could not be reached; nothing was enqueued."""

    status_code = 503
    code = "unavailable"

    def client_message(self) -> str:
        return "the queue is unavailable; retry shortly"  # the cause (hosts, ports) is for the log, not the client

    def client_headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class OutcomeUnknownError(QueueUnavailableError):
    """A write to Redis went out and no answer came back (a timeout, or the connection went down after it): Redis
    may still have run it. A retry with the same Idempotency-Key returns the job if it was made; a retry without one
    can make a second job."""

    code = "outcome_unknown"

    def client_message(self) -> str:
        return (
            "the job store did not answer in time, so the submission may have been enqueued: retry with the same"
            " Idempotency-Key, which returns the job if it was (a retry without one can create a second job)"
        )


class ReplyLostError(redis.ConnectionError):
    """The connection to Redis went down while a command sent on it waited for its reply: whether Redis ran the
    command is unknown."""


def write_failed(exc: redis.RedisError, what: str = "the job store") -> QueueUnavailableError:
    """The error for a write to Redis that raised `exc`: `OutcomeUnknownError` where Redis may have run it (a
    timeout, a reply lost with its connection), else `QueueUnavailableError` (nothing was written)."""
    if isinstance(exc, (redis.TimeoutError, ReplyLostError)):
        return OutcomeUnknownError(f"{what} did not answer; the write may have happened: {exc}")
    return QueueUnavailableError(f"{what} is unreachable; nothing was enqueued: {exc}")


class ModelNotAllowedError(ProducerError, ValueError):
    """The job asks for a model this deployment does not serve."""

    status_code = 422
    code = "validation_error"

    def client_fields(self) -> list[dict[str, str]]:
        return [{"field": "model", "message": str(self)}]


class SourceNotAllowedError(ModelNotAllowedError):
    """The job names a model, LoRA or adapter source this deployment does not allow (`producer.source_policy`):
    422 naming the field (`loras.0.name`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def client_fields(self) -> list[dict[str, str]]:
        return [{"field": self.field, "message": str(self)}]


class ModelLimitError(ProducerError, ValueError):
    """The job asks for something its catalog model cannot do (a scheduler, a size, a negative prompt): 422 naming
    each field and what the model accepts."""

    status_code = 422
    code = "validation_error"

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = [(field, message) for field, message in problems]

    def client_fields(self) -> list[dict[str, str]]:
        return [{"field": field, "message": message} for field, message in self.problems]


class CatalogError(ProducerError):
    """The model catalog (`SDQ_MODEL_CATALOG`) cannot be read or is not valid; the message names the file.

    Raised where a deployable starts (it then prints one line and exits); a server that met it while serving could
    not serve at all, hence 503, without the file's path."""

    status_code = 503
    code = "unavailable"

    def client_message(self) -> str:
        return "the server's model catalog cannot be read"


class JobConflictError(ProducerError):
    """The job is in a state that does not allow the operation (e.g. cancelling a finished job)."""

    status_code = 409
    code = "conflict"


class WebhookUrlError(ProducerError, ValueError):
    """A URL the server was asked to call is refused (SSRF guard: scheme, private or metadata address)."""

    status_code = 422
    code = "validation_error"

    def client_message(self) -> str:
        return f"webhook_url refused: {self}"

    def client_fields(self) -> list[dict[str, str]]:
        return [{"field": "webhook_url", "message": str(self)}]


class BatchNotFoundError(ProducerError, LookupError):
    """No batch with that id (or it belongs to another tenant, or it expired)."""

    status_code = 404
    code = "not_found"

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch {_shown(batch_id)}")
        self.batch_id = batch_id


class AuthenticationError(ProducerError):
    """The request carries no valid API key where one is required."""

    status_code = 401
    code = "unauthenticated"

    def client_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ProducerError):
    """The API key is valid but its role does not allow this (a tenant key on a fleet-wide view, a scaling key
    anywhere but `GET /v1/scaling`)."""

    status_code = 403
    code = "forbidden"


class RateLimitedError(ProducerError):
    """The API key sent requests faster than its rate limit allows; retry after `retry_after_s`."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def client_headers(self) -> dict[str, str]:
        # Whole seconds (RFC 9110), rounded up so that a client retrying on time is not refused again.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class QuotaExceededError(RateLimitedError):
    """The API key has as many queued jobs as its quota allows; nothing was enqueued."""

    code = "quota_exceeded"


class TooManyStreamsError(RateLimitedError):
    """The API key (or, in open mode, the client address) already holds as many event streams as allowed."""

    code = "too_many_streams"


class IdempotencyConflictError(ProducerError):
    """An `Idempotency-Key` was reused with a different request body (or its first request is still running)."""

    status_code = 422
    code = "idempotency_key_reused"

    def __init__(self, message: str, *, in_progress: bool = False) -> None:
        super().__init__(message)
        self.in_progress = in_progress
        if in_progress:  # not the client's mistake: the same request is still being served, so retry it
            self.status_code, self.code = 409, "idempotency_in_progress"

    def client_fields(self) -> list[dict[str, str]] | None:
        return None if self.in_progress else [{"field": "Idempotency-Key", "message": str(self)}]

    def client_headers(self) -> dict[str, str] | None:
        return {"Retry-After": "1"} if self.in_progress else None


class InvalidInputError(ProducerError, ValueError):
    """An input image is unusable: undecodable, truncated, a decompression bomb, over a size or pixel limit, the
    wrong size for its role, an unknown or foreign upload id, or a URL that is forbidden or cannot be fetched.

    At submission the API answers 422 naming `field`; while a job is prepared the worker fails it with
    `error_code` (`invalid_input`) and this message, without retrying: the same input would fail again.
    """

    status_code = 422
    code = "validation_error"
    #: What a job that failed with this error reports as `JobError.code`.
    error_code: ClassVar[ErrorCode] = ErrorCode.INVALID_INPUT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        #: The request field at fault, dotted as API errors name fields (`image`, `controlnets.0.image.url`).
        self.field = field
        #: What is wrong with it, without the field name.
        self.reason = message

    def client_message(self) -> str:
        return f"invalid request: {self}"

    def client_fields(self) -> list[dict[str, str]]:
        return [{"field": self.field, "message": self.reason}]
