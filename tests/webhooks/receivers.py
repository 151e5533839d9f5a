"""Real HTTP receivers and a canary TCP listener on loopback, for the webhook tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: (status, headers) a receiver answers one request with.
Answer = tuple[int, dict[str, str]]


@dataclass
class Received:
    """One request a receiver got."""

    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    wall_s: float = 0.0


@dataclass
class Receiver:
    """An HTTP server that records every POST and answers from a script (then 200 once the script is used up)."""

    url: str
    requests: list[Received] = field(default_factory=list)
    script: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> Answer:
        with self.lock:
            return self.script.pop(0) if self.script else (200, {})

    def wait_for(self, count: int, timeout_s: float = 60.0) -> list[Received]:
        """Poll until at least `count` requests arrived; returns them (fails the test on timeout)."""
        return _wait_for(self.requests, count, timeout_s)


def _wait_for(requests: list[Received], count: int, timeout_s: float) -> list[Received]:
    deadline = time.monotonic() + timeout_s
    while len(requests) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"receiver got {len(requests)} of {count} requests in {timeout_s} s")
        time.sleep(0.02)
    return list(requests)


@contextmanager
def receiver(script: list[Answer] | None = None) -> Iterator[Receiver]:
    """A `Receiver` on 127.0.0.1 with a free port, stopped on exit."""
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            got = holder["r"]
            headers = {name.lower(): value for name, value in self.headers.items()}
            got.requests.append(Received(time.monotonic(), self.path, headers, body, time.time()))
            status, headers = got.answer()
            payload = b"ok"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook", script=list(script or []))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["r"]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Slow:
    """A receiver that is slow on purpose: it trickles the first `trickles` answers' bodies a byte at a time (each
    `byte_every_s`), and holds every other request `hold_s` before answering 200. It counts requests in flight."""

    url: str
    trickles: int = 0
    byte_every_s: float = 0.2
    hold_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout_s: float = 60.0) -> list[Received]:
        """Poll until at least `count` requests arrived; returns them (fails the test on timeout)."""
        return _wait_for(self.requests, count, timeout_s)


@contextmanager
def slow_receiver(*, trickles: int = 0, byte_every_s: float = 0.2, hold_s: float = 0.0) -> Iterator[Slow]:
    """A `Slow` receiver on 127.0.0.1 with a free port, stopped on exit (a trickle in progress is cut off)."""
    holder: dict[str, Slow] = {}
    stopping = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            got = holder["r"]
            headers = {name.lower(): value for name, value in self.headers.items()}
            with got.lock:
                got.requests.append(Received(time.monotonic(), self.path, headers, body, time.time()))
                trickle = len(got.requests) <= got.trickles
                got.in_flight += 1
                got.most_in_flight = max(got.most_in_flight, got.in_flight)
            try:
                payload = b"x" * 1000 if trickle else b"ok"
                if not trickle:
                    stopping.wait(got.hold_s)
                self.send_response(200)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                for i in range(len(payload) if trickle else 1):
                    self.wfile.write(payload[i : i + 1] if trickle else payload)
                    self.wfile.flush()
                    if trickle and stopping.wait(got.byte_every_s):
                        return
            except OSError:
                pass  # the sender gave up on us: that is the point of a trickle
            finally:
                with got.lock:
                    got.in_flight -= 1

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    holder["r"] = Slow(url=url, trickles=trickles, byte_every_s=byte_every_s, hold_s=hold_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["r"]
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()


@dataclass
class Canary:
    """A TCP listener that only counts the connections it receives (it should receive none)."""

    port: int
    connections: int = 0


@contextmanager
def canary(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> Iterator[Canary]:
    """A canary listener on loopback (IPv4 or IPv6), closed on exit."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(16)
    sock.settimeout(0.05)
    bird = Canary(port=sock.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            bird.connections += 1
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield bird
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def counting_resolver(answers: dict[str, list[str]]) -> tuple[Callable[[str, int], list[str]], list[str]]:
    """A resolver hook answering from `answers` (no DNS server can run here), and the list of names it was asked."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return list(answers[host])

    return resolve, asked
