"""`sdq up`: a whole local stack in one command: the API (with the dashboard), one worker per device, the webhook
sender and the controller (provider `none`), on the embedded Redis and local storage unless `SDQ_REDIS_URL` /
`SDQ_STORAGE_URL` say otherwise.

Each child runs in its own session, so Ctrl-C reaches only this process, which then stops the children in order
(workers first: they drain), waits, and kills what is still running after a timeout. On Linux each child also has
`PR_SET_PDEATHSIG`, so even a `kill -9` of `sdq up` leaves no orphans behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from .embedded import EmbeddedRedis
from .settings import ApiSettings

#: Seconds a child gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1


def device_count() -> int:
    """NVIDIA GPUs on this machine, from `nvidia-smi -L` (no torch import); 0 without a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listed.splitlines() if line.startswith("GPU "))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One process of the stack."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


class Up:
    """Starts and stops the stack's processes; `run()` blocks until a signal (or a child dies)."""

    def __init__(
        self,
        env: Mapping[str, str],
        logs: Path,
        *,
        workers: int,
        log_level: str = "info",
        emit: Callable[[str], None] = print,
    ) -> None:
        self.env = dict(env)
        self.logs = logs
        self.workers = workers
        self.log_level = log_level
        self.emit = emit
        self.children: list[Child] = []
        self.stop_event = threading.Event()

    def spawn(self, name: str, command: str, **env: str) -> Child:
        """Start `sdq <command>` with extra settings `env`, logging to `<logs>/<name>.log`."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("wb") as handle:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "producer.cli", command, "--log-level", self.log_level],
                env={**self.env, **env},
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # set before exec
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def start(self, api_url: str, *, timeout_s: float = 60.0) -> None:
        """The API first (and healthy), then the workers, the webhook sender and the controller."""
        api = self.spawn("api", "api")
        deadline = time.monotonic() + timeout_s
        while not self._healthy(api_url):
            if api.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not come up; see {api.log}")
            time.sleep(0.1)
        devices = device_count()
        for index in range(self.workers):
            # One worker per GPU, each pinned to its device; without GPUs, CPU workers.
            device = {"SDQ_DEVICE": f"cuda:{index % devices}"} if devices else {}
            self.spawn(f"worker-{index}", "worker", **device)
        self.spawn("webhooks", "webhooks")
        self.spawn("controller", "controller", SDQ_PROVIDER="none", SDQ_CONTROLLER_METRICS_PORT="")

    @staticmethod
    def _healthy(api_url: str) -> bool:
        try:
            return httpx.get(f"{api_url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def wait(self) -> int:
        """Until SIGINT/SIGTERM (0) or a child exits on its own (1)."""
        while not self.stop_event.wait(0.5):
            for child in self.children:
                if child.process.poll() is not None:
                    self.emit(f"{child.name} exited with status {child.process.returncode}; see {child.log}")
                    return 1
        return 0

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM workers first (they drain), then the rest, the API last; SIGKILL what outlives `timeout_s`."""
        order = sorted(self.children, key=lambda c: (not c.name.startswith("worker"), c.name == "api"))
        for child in order:
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in order:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.emit(f"{child.name} did not stop in {timeout_s:.0f} s: killed")
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()


def run_up(*, workers: int | None = None, log_level: str = "info", emit: Callable[[str], None] = print) -> int:
    """Run the stack until Ctrl-C; returns the exit status."""
    settings = ApiSettings()
    data_dir = settings.data_dir.resolve()
    api_url = settings.resolved_public_url
    env = {**os.environ, "SDQ_DATA_DIR": str(data_dir), "SDQ_API_URL": api_url}
    env.setdefault("SDQ_IDLE_TIMEOUT_S", "0")  # a local stack keeps its worker; scale to zero is for clouds
    count = workers if workers is not None else max(1, device_count())
    stack = Up(env, data_dir / "logs", workers=count, log_level=log_level, emit=emit)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stack.stop_event.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    with ExitStack() as resources:
        if settings.redis_url is None:  # owned here, so it outlives every child and stops after them
            embedded = resources.enter_context(EmbeddedRedis(data_dir))
            env["SDQ_REDIS_URL"] = stack.env["SDQ_REDIS_URL"] = embedded.url
        try:
            stack.start(api_url)
        except RuntimeError as exc:
            emit(f"error: {exc}")
            stack.stop()
            return 1
        emit(f"dashboard: {api_url}/ui/")
        emit(f"API: {api_url} (docs at {api_url}/docs); {count} worker(s), webhook sender, controller")
        emit(f"logs: {data_dir / 'logs'}; press Ctrl-C to stop")
        try:
            status = stack.wait()
        finally:
            emit("stopping…")
            stack.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    emit("stopped")
    return status
