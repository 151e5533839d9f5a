"""A recording reverse proxy in front of an S3 server, enforcing real S3's one-auth-mechanism rule.

SeaweedFS (and moto) accept a presigned GET that also carries an `Authorization` header; real S3 refuses it with
400 InvalidArgument "Only one auth mechanism allowed". Placed as the storage endpoint (the host presigned URLs
name), this proxy forwards every request unchanged (its Host header too, so SigV4 signatures still match upstream),
records what arrived, and refuses such a request as S3 would. A client that sends its API key to storage fails
here, as it would against AWS, and the recording shows what reached storage.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

#: Query parameters that make a request presigned (SigV4 or the legacy V2 scheme).
_PRESIGNED = ("X-Amz-Signature", "X-Amz-Credential", "Signature")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
_TWO_AUTHS = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidArgument</Code><Message>Only one auth mechanism'
    b" allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization"
    b" header should be specified</Message></Error>"
)


@dataclass(frozen=True)
class Seen:
    """One request as it reached the proxy, and the status it got."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int

    @property
    def presigned(self) -> bool:
        return any(name in self.query for name in _PRESIGNED)


class RecordingProxy:
    """Forwards to `upstream` (`http://host:port`) on a free loopback port; a context manager."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-proxy", daemon=True)

    def recorded(self) -> list[Seen]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self.seen)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
                seen = Seen(self.command, urlsplit(self.path).path, query, headers, 0)
                if seen.presigned and "authorization" in headers:
                    status, reply_headers, reply = 400, [("Content-Type", "application/xml")], _TWO_AUTHS
                else:
                    status, reply_headers, reply = proxy._send_upstream(self.command, self.path, headers, body)
                with proxy._lock:
                    proxy.seen.append(Seen(seen.method, seen.path, query, headers, status))
                self.send_response(status)
                for name, value in reply_headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _send_upstream(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            forwarded = {name: value for name, value in headers.items() if name not in _HOP_BY_HOP}
            connection.request(method, path, body=body or None, headers=forwarded)  # Host kept: signatures match
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
