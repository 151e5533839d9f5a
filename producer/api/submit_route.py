"""`POST /v1/jobs`, the hot route: a direct path for the common submission in front of FastAPI's general one.

FastAPI's request handling for the route (its signature in api/jobs.py: the body, the `Idempotency-Key` header,
the caller) documents it in OpenAPI and answers every case, but solving its parameters costs more than the rest
of a submission (bench/api.py, docs/submit-profile.md), and so do FastAPI's and Starlette's middleware and routing in
front of it. `SubmitLane`, which the app (`api.app.SdqApi`) hands the route's requests ahead of all of them,
answers the common case itself: a text-only job as `application/json`, with a well-formed key or in open mode, body
valid, model and webhook allowed. It validates the body exactly as FastAPI does (`json.loads`, then the model in
Python mode), and makes one Redis call (api/keyed_submit.py: the key check and the create together). Everything
else goes to the general path, which answers as it always has: an invalid body, header or model (there the key is
checked first, so a bad key is a 401 whatever the body), image inputs, a queue in another Redis. The general path
reads the body the direct path read (replayed to it).

A request without a key, or with one that is not even shaped like a key, is answered 401 before its body is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..apikeys import token_key_id
from ..errors import AuthenticationError, ProducerError
from ..idempotency import body_hash
from ..jobs import JobRequest
from ..service import JobService
from ..store import Created, Idempotency
from .auth import Authenticator
from .deps import Deps
from .keyed_submit import KeyedSubmit
from .limits import over_limit, too_large

#: The `Idempotency-Key` header's pattern (api/jobs.py declares it; an invalid one is the general path's 422).
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_READ = frozenset({b"content-length", b"content-type", b"authorization", b"idempotency-key"})
_NO_KEY = "this server requires an API key: send `Authorization: Bearer sdq_…`"

#: The route the lane serves.
SUBMIT_PATH = "/v1/jobs"


class SubmitLane:
    """The direct path of `POST /v1/jobs`, in front of the whole app: `SdqApi` hands it the route's requests before
    FastAPI's and Starlette's layers (telemetry, server-error and body-limit middleware, exception middleware, exit
    stack, routing, the route's request/response wrapper). Those layers cost about as much as the rest of a
    submission: a no-op FastAPI route serves 21 600 requests/s on this machine where a bare ASGI app serves 51 000
    (bench/api.py's load). The lane answers the common submission itself, with the handlers the app registered for
    its errors; anything it declines goes on to `app` (the whole stack, to the route), with the body it read
    replayed. It refuses a declared body over `max_bytes` with 413 as `BodyLimit` does; a chunked body goes on
    unread, for `BodyLimit` to count."""

    def __init__(self, app: ASGIApp, handlers: Mapping[Any, Callable[..., Any]], *, max_bytes: int) -> None:
        self.app = app
        #: The app's exception handlers (`app.exception_handlers`: the same mapping, so later additions count).
        self.handlers = handlers
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None:
            await self.app(scope, receive, send)
            return
        if over_limit(declared, self.max_bytes):
            await too_large(send, self.max_bytes)
            return
        recorded = _Recorded(receive)
        http = Request(scope, recorded)
        answer: Response | Accepted | None
        try:
            answer = await direct_submit(http, headers)
        except Exception as exc:  # answered by the app's handler for it, as the route would be
            answer = await self._answer(http, exc)
        if answer is None:
            await self.app(scope, recorded.replay(), send)
            return
        await answer(scope, recorded, send)

    async def _answer(self, http: Request, exc: Exception) -> Response:
        handler = next((self.handlers[cls] for cls in type(exc).__mro__ if cls in self.handlers), None)
        if handler is None:
            handler = self.handlers[Exception]  # what the server-error middleware the lane runs ahead of answers
        try:
            response: Response = await handler(http, exc)
        except Exception:  # the handler passed it on (a bug, not a client's condition): the server-error answer
            response = await self.handlers[Exception](http, exc)
        return response


class _Recorded:
    """A request's `receive`, keeping what the lane read so that the route it passes the request to reads it too."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.messages: list[Message] = []

    async def __call__(self) -> Message:
        message = await self.receive()
        self.messages.append(message)
        return message

    def replay(self) -> Receive:
        pending = list(self.messages)

        async def receive() -> Message:
            return pending.pop(0) if pending else await self.receive()

        return receive


async def direct_submit(http: Request, headers: Mapping[bytes, bytes]) -> Accepted | None:
    """The answer to a common submission, or None for the general path to answer; `headers`: `_headers`'."""
    state = http.app.state
    auth: Authenticator = state.auth
    service: JobService = Deps.of(http).service
    scripts, keyed = state.scripts, state.keyed_submit
    if scripts is None or not service.one_redis or headers.get(b"content-type") != b"application/json":
        return None
    authorization = headers.get(b"authorization")
    scheme, credentials = get_authorization_scheme_param(authorization.decode("latin-1") if authorization else None)
    token = credentials if scheme.lower() == "bearer" and credentials else None  # as `HTTPBearer` reads it
    key_id = None
    if auth.keys is not None:
        if auth.limiter is None:
            return None
        if not token:
            raise AuthenticationError(_NO_KEY)
        key_id = token_key_id(token)
        if key_id is None:
            raise AuthenticationError("invalid or revoked API key")
    raw_key = headers.get(b"idempotency-key")
    idempotency_key = raw_key.decode("latin-1") if raw_key is not None else None
    if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        return None
    body = await _read_body(http.receive)
    if body is None:
        return None  # the client went away: answered as FastAPI answers it
    try:
        request = JobRequest.model_validate(json.loads(body))
    except (ValueError, RecursionError, ValidationError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if request.has_inputs:
        return None
    try:
        new = service.prepare(request)
    except ProducerError:
        return None
    idempotency = None
    if idempotency_key is not None:  # the hash of the body as the client sent it (before anything was resolved)
        idempotency = Idempotency(idempotency_key, body_hash(request.model_dump_json().encode()))
    assert isinstance(keyed, KeyedSubmit)
    if key_id is None or token is None:  # open mode: nobody to admit
        created = await keyed.create(scripts, new, idempotency)
    else:
        created = await keyed.submit(scripts, key_id, token, new, idempotency)
    return Accepted(created)


async def _read_body(receive: Receive) -> bytes | None:
    """The request's body (its Content-Length is within the limit: the lane checked), or None if the client
    disconnected first. What `Request.body` does, without its stream generator."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The first value of each header the lane reads (one pass; the server lower-cases names)."""
    found: dict[bytes, bytes] = {}
    for name, value in raw:
        if name in _READ and name not in found:
            found[name] = value
    return found


class Accepted:
    """The 202 of a submission, as an ASGI answer: the record (already a validated `JobRecord`, serialised once: no
    response-model pass), its `Location`, and `Idempotent-Replayed` when an Idempotency-Key replayed it. The lane
    sends it as two messages (a Starlette `Response` costs a few µs more to build); the route returns
    `response()`, the same answer."""

    __slots__ = ("body", "headers")

    def __init__(self, created: Created) -> None:
        self.body = created.record.model_dump_json().encode()
        self.headers = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"application/json"),
            (b"location", f"/v1/jobs/{created.record.id}".encode()),
        ]
        if not created.created:
            self.headers.append((b"idempotent-replayed", b"true"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})

    def response(self) -> Response:
        response = Response(self.body, status_code=202)
        response.raw_headers = list(self.headers)
        return response


def accepted(created: Created) -> Response:
    """The route's 202 of a submission (see `Accepted`)."""
    return Accepted(created).response()
