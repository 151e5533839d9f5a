"""How errors look on the wire: always JSON `{"error": {"code", "message", "fields"?}}`, never a stack trace."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from ..errors import ProducerError, QueueUnavailableError
from ..field_errors import field_error

log = logging.getLogger(__name__)
#: Where FastAPI says a request value came from; `fields` names the field itself.
_REQUEST_PARTS = ("body", "query", "path")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


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
        403: "The API key's role does not allow this route (fleet-wide views need an `admin` key; a `scaling`"
        " key may read only `GET /v1/scaling`).",
        404: "No such job.",
        409: "The job's state does not allow this.",
        413: "Request body too large.",
        422: "Invalid request: see `error.fields` (also a body that is not UTF-8 JSON, or nests too deeply).",
        429: "Over the API key's request rate, queued-jobs quota or open event streams; retry after `Retry-After`"
        " seconds.",
        500: "An internal error: `error.message` holds an incident number for the server's log; nothing was enqueued.",
        503: "Redis is unreachable (`error.code` `unavailable`: nothing was enqueued), or did not answer a write in"
        " time (`outcome_unknown`: it may have been enqueued; retry with the same Idempotency-Key). Retry after"
        " `Retry-After` seconds.",
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


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = [field_error(e, drop=_REQUEST_PARTS) for e in exc.errors()]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return error_response(422, "validation_error", f"invalid request: {summary}", fields=fields)


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not decode the body at all
        return _unreadable_body(exc.__cause__)
    code = {404: "not_found", 405: "method_not_allowed", 403: "forbidden", 413: "payload_too_large"}.get(
        exc.status_code, "http_error"
    )
    headers = exc.headers
    if exc.status_code == 405:  # Starlette names the methods of one route; the path may have several
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (RFC 9110: what a 405's `Allow` lists).

    Asked of the routes themselves (`matches`, once per method): routers included in the app are not flat
    lists of routes to read methods from."""
    found = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            found.append(method)
    return found


def _unreadable_body(cause: BaseException) -> JSONResponse:
    if isinstance(cause, UnicodeDecodeError):
        message = "the body is not valid UTF-8 (JSON must be UTF-8 encoded)"
    elif isinstance(cause, RecursionError):
        message = "the body nests deeper than the server parses"
    else:
        message = "the body could not be parsed"
    fields = [{"field": "body", "message": message}]
    return error_response(422, "validation_error", f"invalid request: body: {message}", fields=fields)


async def _producer(request: Request, exc: ProducerError) -> JSONResponse:
    """Every producer error, from the status, code, message, fields and headers it carries."""
    if exc.status_code == ProducerError.status_code:
        raise exc  # a bug, not a condition the client can act on: the server-error handler reports an incident
    if exc.status_code >= 500:
        log.warning("answered %d %s: %s", exc.status_code, exc.code, exc)
    return error_response(
        exc.status_code,
        exc.code,
        exc.client_message(),
        fields=exc.client_fields(),
        headers=exc.client_headers(),
    )


async def _redis(request: Request, exc: redis.RedisError) -> JSONResponse:
    unavailable = QueueUnavailableError(f"redis: {exc}")
    unavailable.__cause__ = exc
    return await _producer(request, unavailable)


async def _gone(request: Request, exc: ClientDisconnect) -> Response:
    # The client left before its body had all arrived (a route reading it itself: batches, inbound hooks). Its
    # own doing, no incident; and the answer reaches no one.
    log.info("%s %s: the client went away before its body arrived", request.method, request.url.path)
    return Response(status_code=400)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.exception("unhandled error (incident %s)", incident)
    return error_response(500, "internal", f"internal error (incident {incident}); nothing was enqueued")


def install(app: FastAPI) -> None:
    """Register the handlers."""
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(ProducerError, _producer)  # type: ignore[arg-type]
    app.add_exception_handler(redis.RedisError, _redis)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, _gone)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal)
