"""`sdq up`: the whole local stack from one command, its dashboard URL printed, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children in their own sessions included)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_runs_every_process_serves_the_dashboard_and_stops_them_all(
    tmp_path: Path, model_cache: Path, redis_server: str, sig: signal.Signals
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SDQ_DATA_DIR": str(tmp_path / "data"),
        "SDQ_REDIS_URL": redis_server,
        "SDQ_PORT": str(port),
        "SDQ_MODEL_CACHE_DIR": str(model_cache),
        "HF_HUB_OFFLINE": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "producer.cli", "up", "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        while not any("dashboard:" in line for line in lines) and time.monotonic() < deadline:
            lines.append(process.stdout.readline())
        assert f"dashboard: http://127.0.0.1:{port}/ui/" in "".join(lines), lines
        page = httpx.get(f"http://127.0.0.1:{port}/ui/")
        assert page.status_code == 200 and "content-security-policy" in page.headers
        children = _descendants(process.pid)
        commands = {_command(pid) for pid in children}
        assert {"api", "worker", "webhooks", "controller"} <= commands, commands
        base = f"http://127.0.0.1:{port}"
        job = httpx.post(f"{base}/v1/jobs", json={"prompt": "up", "width": 64, "height": 64, "steps": 2}).json()
        wait_for(lambda: httpx.get(f"{base}/v1/jobs/{job['id']}").json()["status"] == "succeeded", 120)
        process.send_signal(sig)
        assert process.wait(timeout=60) == 0
        assert "stopped" in process.stdout.read()
        wait_for(lambda: not any(_alive(pid) for pid in children), 10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _command(pid: int) -> str | None:
    """The `sdq` subcommand a process runs (`python -m producer.cli <command> …`), else None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return argv[3] if argv[1:3] == ["-m", "producer.cli"] and len(argv) > 3 else None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
