"""How errors look on the wire: always JSON `{"error": {"code", "message", "fields"?}}`, never a stack trace."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ..errors import (
    AuthenticationError,
    BatchNotFoundError,
    IdempotencyConflictError,
    JobConflictError,
    JobNotFoundError,
    ModelNotAllowedError,
    QueueUnavailableError,
    QuotaExceededError,
    RateLimitedError,
    WebhookUrlError,
)

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One invalid field: its dotted path (`width`, `metadata.key`, or `body`) and what is wrong with it."""

    field: str
    message: str


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable `code` and a human `message`."""

    code: str
    message: str
    fields: list[FieldError] | None = None


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail


#: For route declarations, so that OpenAPI documents the error shape clients really get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "Missing or invalid API key (`Authorization: Bearer sdq_…`).",
        404: "No such job.",
        409: "The job's state does not allow this.",
        413: "Request body too large.",
        422: "Invalid request: see `error.fields`.",
        429: "Over the API key's request rate or queued-jobs quota; retry after `Retry-After` seconds.",
        503: "Redis is unreachable; nothing was enqueued. Retry after `Retry-After` seconds.",
    }.items()
}


def error_response(
    status: int, code: str, message: str, *, fields: list[dict[str, str]] | None = None, headers: Any = None
) -> JSONResponse:
    """The one shape every error response has."""
    body: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field(error: dict[str, Any]) -> dict[str, str]:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    if error.get("type") == "json_invalid":
        return {"field": "body", "message": "request body is not valid JSON"}
    message = str(error.get("msg", "invalid"))
    return {"field": ".".join(loc) or "body", "message": message.removeprefix("Value error, ")}


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = [_field(e) for e in exc.errors()]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return error_response(422, "validation_error", f"invalid request: {summary}", fields=fields)


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed", 403: "forbidden"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _not_found(request: Request, exc: JobNotFoundError) -> JSONResponse:
    return error_response(404, "not_found", str(exc))


async def _model(request: Request, exc: ModelNotAllowedError) -> JSONResponse:
    return error_response(422, "validation_error", str(exc), fields=[{"field": "model", "message": str(exc)}])


async def _conflict(request: Request, exc: JobConflictError) -> JSONResponse:
    return error_response(409, "conflict", str(exc))


async def _batch_not_found(request: Request, exc: BatchNotFoundError) -> JSONResponse:
    return error_response(404, "not_found", str(exc))


async def _unauthenticated(request: Request, exc: AuthenticationError) -> JSONResponse:
    return error_response(401, "unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"})


async def _rate_limited(request: Request, exc: RateLimitedError) -> JSONResponse:
    code = "quota_exceeded" if isinstance(exc, QuotaExceededError) else "rate_limited"
    return error_response(429, code, str(exc), headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})


async def _idempotency(request: Request, exc: IdempotencyConflictError) -> JSONResponse:
    if exc.in_progress:
        return error_response(409, "idempotency_in_progress", str(exc), headers={"Retry-After": "1"})
    field = {"field": "Idempotency-Key", "message": str(exc)}
    return error_response(422, "idempotency_key_reused", str(exc), fields=[field])


async def _webhook_url(request: Request, exc: WebhookUrlError) -> JSONResponse:
    message = f"webhook_url refused: {exc}"
    return error_response(422, "validation_error", message, fields=[{"field": "webhook_url", "message": str(exc)}])


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("queue unavailable: %s", exc)
    return error_response(503, "unavailable", "the queue is unavailable; retry shortly", headers={"Retry-After": "5"})


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.exception("unhandled error (incident %s)", incident)
    return error_response(500, "internal", f"internal error (incident {incident}); nothing was enqueued")


def install(app: FastAPI) -> None:
    """Register the handlers."""
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(JobNotFoundError, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(ModelNotAllowedError, _model)  # type: ignore[arg-type]
    app.add_exception_handler(JobConflictError, _conflict)  # type: ignore[arg-type]
    app.add_exception_handler(BatchNotFoundError, _batch_not_found)  # type: ignore[arg-type]
    app.add_exception_handler(AuthenticationError, _unauthenticated)  # type: ignore[arg-type]
    app.add_exception_handler(RateLimitedError, _rate_limited)  # type: ignore[arg-type]
    app.add_exception_handler(IdempotencyConflictError, _idempotency)  # type: ignore[arg-type]
    app.add_exception_handler(WebhookUrlError, _webhook_url)  # type: ignore[arg-type]
    app.add_exception_handler(QueueUnavailableError, _unavailable)
    app.add_exception_handler(redis.RedisError, _unavailable)
    app.add_exception_handler(Exception, _internal)
