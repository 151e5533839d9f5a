"""The API's server processes: uvicorn's supervisor, with each worker on its own listening socket (SO_REUSEPORT).

uvicorn's `--workers` shares one listening socket among its processes, and the process that wakes first accepts
every connection waiting (the event loop accepts up to its backlog per wake-up). Keep-alive clients that connect
together (a load balancer's pool, a batch client's connections) then all land on one process while the others
idle. Measured with 32 connections on 2 workers (bench/api.py's load): one process at 1.0 core, the other at 0.00,
for the API and for a no-op FastAPI app alike; which runs were lucky decided the benchmark.

Here every worker binds its own socket to the address with SO_REUSEPORT, and the kernel spreads new connections
over the workers' sockets by their addresses. A worker that dies is restarted by uvicorn's supervisor and binds
again; connections waiting on the dead worker's socket are reset, as they would be for any crash of a process.
Before the workers start, the supervisor binds the address once without SO_REUSEPORT: if anything holds it
(another `sdq api` included: its sockets would otherwise share the port with ours) that fails, as plain uvicorn
does. With one worker, or where the platform has no SO_REUSEPORT, this is plain `uvicorn.run`.

The trade-off (as uvicorn's maintainers put it, encode/uvicorn#2472): a shared socket hands new connections to
whichever process is free to accept, so a process that stalls gets none, and the unfair balance favours latency at
low load; per-process sockets spread the load evenly, but a stalled process keeps its share of new connections.
`SDQ_API_REUSE_PORT=false` chooses the shared socket.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

log = logging.getLogger("uvicorn.error")


def serve(app: str, *, workers: int, host: str, port: int, reuse_port: bool = True, **options: Any) -> None:
    """Run the ASGI app named `app` (an import string; `options`: uvicorn's) on `workers` processes, each on its
    own socket unless `reuse_port` is off."""
    if workers <= 1 or not reuse_port or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(app, workers=workers, host=host, port=port, **options)
        return
    worker = _reuse_port_worker()
    if worker is None:
        log.warning(
            "uvicorn %s's supervisor is not the one sdqueue was built against: its workers share one socket",
            uvicorn.__version__,
        )
        uvicorn.run(app, workers=workers, host=host, port=port, **options)
        return
    config = uvicorn.Config(app, workers=workers, host=host, port=_claim(host, port), **options)
    # uvicorn's supervisor makes each worker with the module's `Process`: ours binds the worker's own socket. This
    # process only supervises (it serves nothing), so the substitution touches nothing else.
    multiprocess.Process = worker  # type: ignore[misc]
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run
        multiprocess.Multiprocess(config, sockets=[]).run()


def _reuse_port_worker() -> type[multiprocess.Process] | None:
    """`_ReusePortWorker`, or None where uvicorn's supervisor lacks what it substitutes into (uvicorn's own
    internals: `Multiprocess(config, sockets)` making its workers with the module's `Process`, whose `target`
    takes the sockets to serve on; so from 0.30 to 0.55 at least). The caller then serves as plain uvicorn does."""
    process = getattr(multiprocess, "Process", None)
    supervisor = getattr(multiprocess, "Multiprocess", None)
    if process is None or supervisor is None or not callable(getattr(process, "target", None)):
        return None
    try:
        takes = inspect.signature(process.target).parameters
        builds = inspect.signature(supervisor).parameters
    except (TypeError, ValueError):
        return None
    if "sockets" not in takes or not {"config", "sockets"} <= set(builds):
        return None
    return _ReusePortWorker


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _claim(host: str, port: int) -> int:
    """The port to serve on (port 0: one the kernel picks), after checking that nothing holds it."""
    probe = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT does not block it
        probe.bind((host, port))
        bound: int = probe.getsockname()[1]
        return bound
    except OSError as exc:
        log.error("%s:%d: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    finally:
        probe.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` with SO_REUSEPORT (the server listens on it)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


if hasattr(multiprocess, "Process"):  # uvicorn 0.30 and later; see `_reuse_port_worker`

    class _ReusePortWorker(multiprocess.Process):
        """uvicorn's worker process, serving on a socket of its own instead of the supervisor's."""

        def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover - in the worker
            try:
                sock = listening_socket(self.config.host, self.config.port)
            except OSError as exc:
                log.error("%s:%d: %s", self.config.host, self.config.port, exc)
                sys.exit(STARTUP_FAILURE)  # the supervisor stops: every restart would fail the same way
            super().target([sock])


def listeners(port: int) -> int | None:
    """How many sockets listen on TCP `port` on this machine (from /proc/net: every worker's, once each has
    bound); None where the platform does not say."""
    found = tcp_sockets(port, LISTEN)
    return None if found is None else len(found)


#: /proc/net/tcp's socket states that `tcp_sockets` is asked about.
LISTEN, ESTABLISHED = "0A", "01"


def tcp_sockets(port: int, state: str) -> list[int] | None:
    """The inodes of this machine's TCP sockets whose local port is `port`, in `state` (`LISTEN`,
    `ESTABLISHED`), from /proc/net/tcp and tcp6; None where the platform has neither."""
    found: list[int] = []
    seen = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as rows:
                next(rows)  # the header
                seen = True
                for row in rows:
                    # sl, local address:port (hex), remote, state, tx:rx, tr, retr, uid, timeout, inode
                    fields = row.split()
                    if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        found.append(int(fields[9]))
        except OSError:
            continue
    return found if seen else None
