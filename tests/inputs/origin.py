"""An image origin on loopback for the URL-input tests: it serves scripted answers by path and counts requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Answer:
    """What the origin sends for one path. `chunked` leaves out Content-Length (the size is learnt by reading)."""

    body: bytes
    content_type: str = "image/png"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


@dataclass
class Origin:
    """A running origin: its base URL (`http://127.0.0.1:<port>`), its answers and the requests it got."""

    base_url: str
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """The URL of `path`, under another name for the same address if `host` is given."""
        return f"http://{host}:{self.port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for got, _ in self.requests if got == path)


@contextmanager
def origin(answers: dict[str, Answer] | None = None) -> Iterator[Origin]:
    """An `Origin` on a free loopback port, stopped on exit."""
    holder: dict[str, Origin] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            got = holder["o"]
            got.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            answer = got.answers.get(self.path, Answer(b"not found", "text/plain", 404))
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if answer.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(answer.body), 4096):
                    piece = answer.body[start : start + 4096]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["o"] = Origin(f"http://127.0.0.1:{server.server_address[1]}", dict(answers or {}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield holder["o"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
