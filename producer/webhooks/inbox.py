"""A local webhook receiver that verifies what it gets: for `sdq demo`, and for trying webhooks out.

It listens on loopback, checks each message's Standard Webhooks signature, and keeps the events it accepted.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from ..jobs import WebhookEvent
from .signing import SignatureError, verify


class Inbox:
    """Receives webhooks at `url` (once started), verifying each with `secrets`; a context manager."""

    def __init__(self, secrets: list[str], *, host: str = "127.0.0.1") -> None:
        self.secrets = secrets
        self.events: list[WebhookEvent] = []
        self.rejected = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self.url = f"http://{host}:{self._server.server_address[1]}/webhooks"
        self._thread = threading.Thread(target=self._server.serve_forever, name="sdq-inbox", daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    verify(inbox.secrets, dict(self.headers.items()), body)
                    event = WebhookEvent.model_validate_json(body)
                except (SignatureError, ValueError):
                    with inbox._lock:
                        inbox.rejected += 1
                    self.send_response(401)
                else:
                    with inbox._lock:
                        inbox.events.append(event)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # the demo prints a summary instead

        return Handler

    def received(self) -> list[WebhookEvent]:
        """The verified events so far, in arrival order."""
        with self._lock:
            return list(self.events)

    def __enter__(self) -> Inbox:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
