"""Running an emulator: finding its binary, free ports, and a process that is up until the block ends."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 90.0  # generous: the test machine is a loaded 2-core box


class EmulatorError(RuntimeError):
    """A server could not be found or did not come up; the message names its log."""


def find_binary(name: str) -> str:
    """Path of executable `name`: on PATH, beside `sys.executable`, or in `<repo>/.tools/node_modules/.bin`."""
    candidates = [shutil.which(name), Path(sys.executable).parent / name, REPO_ROOT / ".tools/node_modules/.bin" / name]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(candidate)
    raise EmulatorError(f"{name} not found on PATH, beside {sys.executable}, or in {REPO_ROOT}/.tools; run make test")


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that nothing listens on right now (held together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def run_process(
    argv: list[str], name: str, ready: Callable[[], bool], env: dict[str, str] | None = None
) -> Iterator[Path]:
    """Run `argv` with its output in a log file; yield once `ready()` is true; terminate it afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"sdq-{name}-"))
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env={**os.environ, **(env or {})}
        )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not quietly(ready):
            if process.poll() is not None:
                raise EmulatorError(f"{name} exited with {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise EmulatorError(f"{name} not ready after {_START_TIMEOUT_S:.0f} s; see {log_path}")
            time.sleep(0.1)
        yield workdir
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def quietly(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:  # the server is still starting: connection refused, 5xx, not-yet-ready errors
        return False


def answers_http(url: str) -> bool:
    import httpx

    httpx.get(url, timeout=2)
    return True
