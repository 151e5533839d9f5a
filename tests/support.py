"""Helpers shared by the tests: free ports, polling, and a running API + workers ("a stack")."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from producer import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """A running API plus the worker processes started for one test module."""

    env: dict[str, str]
    api_url: str
    logs: Path
    api: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def client(self) -> Client:
        return Client(self.api_url, timeout_s=30)

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"worker-{len(self.workers)}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "producer.cli", "worker", "--log-level", "info"],
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(process)
        return process

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.api]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def start_stack(tmp: Path, redis_url: str, model_cache: Path, **env: str) -> Stack:
    """`sdq api` on a free port against `redis_url`, local storage under `tmp`; no worker yet."""
    port = free_port()
    full_env = {
        **os.environ,
        "SDQ_REDIS_URL": redis_url,
        "SDQ_DATA_DIR": str(tmp / "data"),
        "SDQ_MODEL_CACHE_DIR": str(model_cache),
        "SDQ_PORT": str(port),
        "SDQ_API_URL": f"http://127.0.0.1:{port}",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "api.log").open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "api", "--log-level", "warning"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    stack = Stack(full_env, f"http://127.0.0.1:{port}", logs, api)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{stack.api_url}/healthz", timeout=1).status_code == 200:
                return stack
        except httpx.TransportError:
            pass
        if api.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            raise RuntimeError(f"sdq api did not start:\n{(logs / 'api.log').read_text()}")
        time.sleep(0.05)


def wait_for(predicate, timeout_s: float = 60.0, interval_s: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval_s)
