"""Refuse request bodies over a size limit with 413, before they are read into memory."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: A job request is a few KB; even a list of them (batches come later) stays well under this.
MAX_BODY_BYTES = 1024 * 1024


class _TooLarge(HTTPException):
    """The body streamed past its limit: raised out of `receive`, so the route's error handlers answer it (413
    `payload_too_large`), and FastAPI's body parsing lets it through instead of making it a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 when Content-Length, or the bytes actually streamed, exceed `max_bytes`."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        *,
        per_path: Mapping[str, int] | None = None,
        per_prefix: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: Larger limits for the few routes that take bulk bodies (`/v1/batches`), by exact path.
        self.per_path = dict(per_path or {})
        #: Limits by path prefix, for routes with a key in the path (`/v1/files/` takes local uploads).
        self.per_prefix = dict(per_prefix or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = _content_length(scope["headers"])
        if declared is not None:
            if over_limit(declared, limit):
                await too_large(send, limit)
                return
            # The server reads exactly Content-Length bytes (HTTP/1.1 framing): nothing to count, nothing to wrap.
            await self.app(scope, receive, send)
            return
        # A body without a length (chunked) is counted as the app reads it, never buffered here: the route can
        # answer first (`POST /v1/jobs` answers a request without a key 401 with the body left unread).
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:  # pragma: no cover - a route that answers before reading its whole body
                raise
            await too_large(send, limit)

    def _limit(self, path: str) -> int:
        if path in self.per_path:
            return self.per_path[path]
        return next((limit for prefix, limit in self.per_prefix.items() if path.startswith(prefix)), self.max_bytes)


def over_limit(content_length: bytes, limit: int) -> bool:
    """Whether a declared Content-Length is refused: over `limit`, or not a plain decimal number."""
    return not content_length.isdigit() or int(content_length) > limit


async def too_large(send: Send, limit: int) -> None:
    """The 413 of a body over `limit` bytes, sent before any of it is read."""
    body = json.dumps({"error": {"code": "payload_too_large", "message": f"request body over {limit} bytes"}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    # The ASGI server lower-cases header names.
    return next((value for name, value in headers if name == b"content-length"), None)
