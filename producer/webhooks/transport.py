"""An httpx transport that dials only the addresses the SSRF guard vetted, never resolving the name again, and
that gives a whole attempt one deadline.

The request keeps its URL, so the Host header, TLS SNI and certificate verification use the original hostname;
only the TCP connect goes to a pinned address. Redirects are never followed (httpx does not follow them unless
asked, and this transport answers for one target only).

httpx's timeouts are per phase and per socket operation: a receiver that sends one byte every few seconds never
trips them and could hold a delivery thread for as long as it likes. Here every connect, read and write is given
at most the time left until one deadline, so connect, headers and body together end by it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from typing import Any

import certifi
import httpcore
import httpx

from .ssrf import Target

#: Bytes of a receiver's response body read at most (the log keeps an excerpt; the rest is not needed).
MAX_RESPONSE_BYTES = 64 * 1024


class DeadlineExceeded(httpx.TimeoutException):
    """The attempt's overall deadline passed before the receiver's answer was complete."""


class _Deadline:
    def __init__(self, at: float | None) -> None:
        self.at = at  # time.monotonic() value; None = no overall deadline

    def cap(self, timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
        """`timeout`, shortened to the time left; raises `error` once the deadline has passed."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise error("the attempt's deadline passed")
        return left if timeout is None else min(timeout, left)

    @property
    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self.inner = inner
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.deadline.cap(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.deadline.cap(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        capped = self.deadline.cap(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self.inner.start_tls(ssl_context, server_hostname, capped), self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class PinnedBackend(httpcore.SyncBackend):
    """Connects to the vetted addresses of one target, in order, whatever host httpcore asks for."""

    def __init__(self, target: Target, deadline_at: float | None = None) -> None:
        self.target = target
        self.deadline = _Deadline(deadline_at)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if host.lower().rstrip(".") != self.target.host.strip("[]") or port != self.target.port:
            # Nothing but the vetted target may be dialled (e.g. a proxy taken from the environment).
            raise httpcore.ConnectError(f"refusing to connect to {host}:{port}: not the vetted target")
        error: Exception | None = None
        for address in self.target.addresses:
            capped = self.deadline.cap(timeout, httpcore.ConnectTimeout)
            try:
                stream = super().connect_tcp(address, port, capped, local_address, socket_options)
            except httpcore.ConnectError as exc:  # try the next vetted address, as a resolver-driven client would
                error = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        raise error or httpcore.ConnectError("no vetted address")


class PinnedTransport(httpx.BaseTransport):
    """One target, one connection pool; bodies read up to `MAX_RESPONSE_BYTES`; with `deadline_s`, every request
    through it must be answered whole within that many seconds of the transport's creation."""

    def __init__(
        self, target: Target, *, ssl_context: ssl.SSLContext | None = None, deadline_s: float | None = None
    ) -> None:
        context = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self.deadline_s = deadline_s
        self._backend = PinnedBackend(target, None if deadline_s is None else time.monotonic() + deadline_s)
        self._pool = httpcore.ConnectionPool(ssl_context=context, network_backend=self._backend, retries=0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        )
        headers, body = request.headers.raw, request.read()
        try:
            with self._pool.stream(
                request.method, url, headers=headers, content=body, extensions=request.extensions
            ) as response:
                received = bytearray()
                for chunk in response.iter_stream():
                    received += chunk
                    if len(received) >= MAX_RESPONSE_BYTES:
                        break
                content = bytes(received[:MAX_RESPONSE_BYTES])
                return httpx.Response(response.status, headers=response.headers, content=content)
        except httpcore.TimeoutException as exc:
            if self._backend.deadline.passed:
                message = f"no complete answer within the {self.deadline_s:g} s deadline (connect, headers and body)"
                raise DeadlineExceeded(message, request=request) from exc
            raise httpx.TimeoutException(str(exc) or type(exc).__name__, request=request) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            raise httpx.TransportError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        self._pool.close()
