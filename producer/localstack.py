"""A whole sdqueue on one machine as real processes: `sdq api` plus any number of `sdq worker`s.

Used by `sdq demo`, the benchmarks and the integration tests, so all three run the same processes users run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from .serve import listeners


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StackError(Exception):
    """A process of the stack did not come up; the message names its log."""


class LocalStack:
    """Starts the API on a free port with `env` (plus `SDQ_PORT`/`SDQ_API_URL`), then workers on demand."""

    def __init__(self, env: Mapping[str, str], logs: Path, *, log_level: str = "warning") -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "SDQ_PORT": str(self.port), "SDQ_API_URL": self.api_url}
        self.logs = logs
        self.log_level = log_level
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.webhooks: subprocess.Popen[bytes] | None = None
        self.controllers: list[subprocess.Popen[bytes]] = []

    def start(self, *, workers: int = 0, webhooks: bool = True, timeout_s: float = 60.0) -> LocalStack:
        """Start the API, `workers` workers and (unless told not to) the webhook sender; returns once the API is
        healthy."""
        self.logs.mkdir(parents=True, exist_ok=True)
        # Its own process group: with `SDQ_API_WORKERS` > 1 the API is a supervisor and its server processes, and
        # a kill must reach them all (SIGTERM reaches them through the supervisor).
        self.api = self._spawn("api", self.logs / "api.log", self.env, group=True)
        if webhooks:
            self.webhooks = self._spawn("webhooks", self.logs / "webhooks.log", self.env)
        for _ in range(workers):
            self.start_worker()
        deadline = time.monotonic() + timeout_s
        # Healthy, and every server process listening: connections made before a process has bound its socket
        # all go to the others and stay there (keep-alive), which would skew a benchmark's first seconds.
        servers = int(self.env.get("SDQ_API_WORKERS") or 1)
        while True:
            try:
                if httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200 and self._listening(servers):
                    return self
            except httpx.TransportError:
                pass
            if self.api.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StackError(f"the API did not come up; see {self.logs / 'api.log'}")
            time.sleep(0.05)

    def _listening(self, servers: int) -> bool:
        count = listeners(self.port)
        return count is None or count >= servers

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        """Start one more worker process (extra `SDQ_*` settings in `env`)."""
        log = self.logs / f"worker-{len(self.workers)}.log"
        process = self._spawn("worker", log, {**self.env, **env})
        self.workers.append(process)
        return process

    def start_controller(self, **env: str) -> subprocess.Popen[bytes]:
        """Start `sdq controller` (extra `SDQ_*` settings in `env`; its metrics server is off unless asked for)."""
        log = self.logs / f"controller-{len(self.controllers)}.log"
        process = self._spawn("controller", log, {**self.env, "SDQ_CONTROLLER_METRICS_PORT": "", **env})
        self.controllers.append(process)
        return process

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every process (workers drain), then wait; kill what does not exit in time."""
        processes = [p for p in (*self.workers, *self.controllers, self.webhooks, self.api) if p is not None]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                if process is self.api:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
                process.wait()

    def _spawn(
        self, command: str, log: Path, env: Mapping[str, str], *, group: bool = False
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as handle:  # the child keeps its own descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "producer.cli", command, "--log-level", self.log_level],
                env=dict(env),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=group,
            )

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
