"""`sdq api --workers N`: N real server processes share the port, each serves jobs, SIGTERM stops them all; each
on its own socket (SO_REUSEPORT, the default), connections are spread over them, a dead one is replaced, and a
second API cannot join the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from uvicorn.supervisors import multiprocess

from producer import serve
from producer.localstack import free_port
from producer.serve import ESTABLISHED, listeners, tcp_sockets
from producer.settings import ApiSettings

JOB = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 2}


def _children(pid: int) -> set[int]:
    """The server processes of `sdq api` (uvicorn's multiprocessing children, not its resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if parent == pid and b"resource_tracker" not in command:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def _api(
    env: dict[str, str], log: Path, *args: str, port: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = port or free_port()
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "api", "--port", str(port), "--log-level", "info", *args],
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        _wait_for(healthy, 90, "the API to come up")
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _submit(url: str) -> str:
    # A new connection per request: the kernel hands each one to whichever server process accepts it.
    response = httpx.post(f"{url}/v1/jobs", json=JOB, timeout=30)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _stop(process: subprocess.Popen[bytes], children: set[int]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    _wait_for(lambda: not any(_alive(pid) for pid in children), 30, "every server process to exit")


@pytest.mark.redis
def test_two_workers_both_serve_and_sigterm_stops_all(redis_server: str, tmp_path: Path) -> None:
    # One shared socket (SDQ_API_REUSE_PORT=false): a stopped process accepts nothing, so the other takes all.
    env = {"SDQ_REDIS_URL": redis_server, "SDQ_DATA_DIR": str(tmp_path), "SDQ_AUTH": "open"}
    env["SDQ_API_REUSE_PORT"] = "false"
    with _api(env, tmp_path / "api.log", "--workers", "2") as (process, url):
        _wait_for(lambda: len(_children(process.pid)) == 2, 60, "two server processes")
        workers = _children(process.pid)
        ids = []
        # Each server process alone: with the other one stopped, only it can accept connections. A short stop,
        # well inside uvicorn's 5 s health check, so the supervisor does not replace the stopped process.
        for paused in sorted(workers):
            os.kill(paused, signal.SIGSTOP)
            try:
                ids += [_submit(url) for _ in range(3)]
            finally:
                os.kill(paused, signal.SIGCONT)
        assert len(set(ids)) == 6
        for job_id in ids:  # every job is a real record, readable through either process
            assert httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()["status"] == "queued"
        client = redis.Redis.from_url(redis_server)
        try:  # and really enqueued for the workers
            queued = {m.decode() for m in client.hkeys("dramatiq:sdq-generate.msgs")}
        finally:
            client.close()
        assert len(queued) >= 6
        _stop(process, _children(process.pid) | workers)


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def _served_connections(port: int) -> set[int]:
    """The socket inodes of server-side established TCP connections on `port`."""
    return set(tcp_sockets(port, ESTABLISHED) or ())


@pytest.mark.redis
def test_connections_made_together_are_spread_over_the_workers(redis_server: str, tmp_path: Path) -> None:
    """With one shared socket, 16 keep-alive connections opened at once all went to one process (measured with
    bench/api.py's 32: one process at a full core, the other idle); each on its own socket, both get some."""
    env = {"SDQ_REDIS_URL": redis_server, "SDQ_DATA_DIR": str(tmp_path), "SDQ_AUTH": "open"}
    port = free_port()
    with _api(env, tmp_path / "api.log", "--workers", "2", port=port) as (process, _url):
        _wait_for(lambda: listeners(port) == 2, 60, "both server processes listening")
        workers = _children(process.pid)
        # Connected together, before any request (as a client pool or bench/api.py's load generator does).
        connections = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(16)]
        try:
            for connection in connections:  # each one answered, and kept open
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: sdq\r\n\r\n")
                assert connection.recv(65536).startswith(b"HTTP/1.1 200")
            served = _served_connections(port)
            held = {pid: len(_socket_inodes(pid) & served) for pid in workers}
            # 16 connections hashed over 2 sockets: all on one has a chance of 2 in 65 536.
            assert sum(held.values()) == 16 and all(held.values()), held
        finally:
            for connection in connections:
                connection.close()
        _stop(process, workers)


@pytest.mark.redis
def test_a_dead_worker_is_replaced_on_its_own_socket(redis_server: str, tmp_path: Path) -> None:
    env = {"SDQ_REDIS_URL": redis_server, "SDQ_DATA_DIR": str(tmp_path), "SDQ_AUTH": "open"}
    port = free_port()
    with _api(env, tmp_path / "api.log", "--workers", "2", port=port) as (process, url):
        _wait_for(lambda: listeners(port) == 2, 60, "both server processes listening")
        first = _children(process.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: victim not in _children(process.pid) and listeners(port) == 2, 60, "a replacement")
        assert len(_children(process.pid) - first) == 1
        assert len({_submit(url) for _ in range(8)}) == 8  # new connections, wherever they hash, are served
        _stop(process, _children(process.pid))


@pytest.mark.redis
def test_a_second_api_cannot_join_the_port(redis_server: str, tmp_path: Path) -> None:
    """SO_REUSEPORT lets sockets of one user share a port: a second `sdq api` there would quietly take half the
    connections. The supervisor's plain bind first refuses it, as uvicorn does, and the first API goes on."""
    env = {"SDQ_REDIS_URL": redis_server, "SDQ_DATA_DIR": str(tmp_path), "SDQ_AUTH": "open"}
    port = free_port()
    with _api(env, tmp_path / "api.log", "--workers", "2", port=port) as (process, url):
        _wait_for(lambda: listeners(port) == 2, 60, "both server processes listening")
        second = subprocess.run(
            [sys.executable, "-m", "producer.cli", "api", "--port", str(port), "--workers", "2"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 3, second.stdout + second.stderr  # uvicorn's startup failure
        assert "address already in use" in (second.stdout + second.stderr).lower()
        assert listeners(port) == 2
        _submit(url)
        _stop(process, _children(process.pid))


def test_workers_share_one_embedded_redis_stopped_on_exit(tmp_path: Path) -> None:
    env = {"SDQ_DATA_DIR": str(tmp_path), "SDQ_AUTH": "open", "SDQ_REDIS_URL": ""}  # empty: the embedded Redis
    with _api(env, tmp_path / "api.log", "--workers", "2") as (process, url):
        _wait_for(lambda: len(_children(process.pid)) == 2, 60, "two server processes")
        workers = _children(process.pid)
        job_id = _submit(url)
        assert httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).status_code == 200
        assert (tmp_path / "redis.pid").exists()
        _stop(process, workers)
    # The parent started the embedded Redis before its workers and stopped it after them: nothing left running.
    assert not (tmp_path / "redis.sock").exists()


def test_default_worker_count() -> None:
    assert ApiSettings(host="127.0.0.1").resolved_api_workers == 1  # loopback: one process
    assert ApiSettings(host="0.0.0.0", redis_url=None).resolved_api_workers == 1  # embedded Redis
    served = ApiSettings(host="0.0.0.0", redis_url="redis://cache:6379/0")
    assert served.resolved_api_workers == len(os.sched_getaffinity(0))
    assert ApiSettings(host="0.0.0.0", api_workers=3).resolved_api_workers == 3


def test_the_installed_uvicorn_has_the_supervisor_the_per_process_sockets_need() -> None:
    # The other tests here run it; this one names the cause when a uvicorn release changes its internals.
    assert serve._reuse_port_worker() is serve._ReusePortWorker


def test_a_uvicorn_whose_supervisor_differs_gets_the_shared_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    # Patched: the uvicorn release that changes `Multiprocess` does not exist yet. `serve` then takes plain
    # uvicorn's shared socket (and says so) rather than failing.
    class Supervisor:
        def __init__(self, config: object) -> None: ...

    monkeypatch.setattr(multiprocess, "Multiprocess", Supervisor)
    assert serve._reuse_port_worker() is None
    monkeypatch.delattr(multiprocess, "Process")
    assert serve._reuse_port_worker() is None
