"""A loopback HTTP proxy that answers 503 to its first requests and then forwards to a real server.

It stands in for a storage service having a bad moment, so that the backends' retries meet a real failure; with
no failures it is a recording proxy (`seen`), which tells what a client really sent to storage.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True
    upstream: tuple[str, int]
    failures_left: int
    corrupt_marker: bytes | None
    failed: int
    forwarded: int
    lock: threading.Lock
    #: Every request that came in: (method, path, headers with lowercase names).
    seen: list[tuple[str, str, dict[str, str]]]


class _Handler(BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        marker = self.server.corrupt_marker
        if marker and marker in body:  # one flipped bit in transit, as a bad NIC or proxy might cause
            index = body.index(marker)
            body = body[:index] + bytes([body[index] ^ 1]) + body[index + 1 :]
        with self.server.lock:
            fail = self.server.failures_left != 0
            if fail:
                self.server.failures_left -= 1
                self.server.failed += 1
            else:
                self.server.forwarded += 1
        if fail:
            payload = b"<Error><Code>ServiceUnavailable</Code><Message>try again</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        connection = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            # The Host header goes through unchanged: S3 signatures cover it.
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.endheaders(body or None)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


@contextmanager
def flaky_proxy(upstream_url: str, *, failures: int, corrupt: bytes | None = None) -> Iterator[_Proxy]:
    """A proxy to `upstream_url` on a free loopback port; its first `failures` requests get 503 (-1: all).

    With `corrupt`, request bodies that contain those bytes reach the server with one bit of them flipped.
    """
    target = urlsplit(upstream_url)
    server = _Proxy(("127.0.0.1", 0), _Handler)
    server.upstream = (target.hostname or "127.0.0.1", target.port or 80)
    server.failures_left, server.failed, server.forwarded = failures, 0, 0
    server.corrupt_marker = corrupt
    server.lock = threading.Lock()
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def proxy_url(server: _Proxy, upstream_url: str) -> str:
    """`upstream_url` with its host and port replaced by the proxy's."""
    target = urlsplit(upstream_url)
    return target._replace(netloc=f"127.0.0.1:{server.server_address[1]}").geturl()
