"""An httpx transport that dials only the addresses the SSRF guard vetted, never resolving the name again.

The request keeps its URL, so the Host header, TLS SNI and certificate verification use the original hostname;
only the TCP connect goes to a pinned address. Redirects are never followed (httpx does not follow them unless
asked, and this transport answers for one target only).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import certifi
import httpcore
import httpx

from .ssrf import Target

#: Bytes of a receiver's response body read at most (the log keeps an excerpt; the rest is not needed).
MAX_RESPONSE_BYTES = 64 * 1024


class PinnedBackend(httpcore.SyncBackend):
    """Connects to the vetted addresses of one target, in order, whatever host httpcore asks for."""

    def __init__(self, target: Target) -> None:
        self.target = target

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
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # try the next vetted address, as a resolver-driven client would
                error = exc
        raise error or httpcore.ConnectError("no vetted address")


class PinnedTransport(httpx.BaseTransport):
    """One target, one connection pool; bodies read up to `MAX_RESPONSE_BYTES`."""

    def __init__(self, target: Target, *, ssl_context: ssl.SSLContext | None = None) -> None:
        context = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self._pool = httpcore.ConnectionPool(ssl_context=context, network_backend=PinnedBackend(target), retries=0)

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
            raise httpx.TimeoutException(str(exc) or type(exc).__name__, request=request) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            raise httpx.TransportError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        self._pool.close()
