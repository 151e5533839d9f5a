"""Bodies, bounded, against a real `sdq api` with keys required: a 40 MB batch stalls no other request, and 50
unauthenticated 60 MB uploads are refused without being read (the API's resident memory stays small)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from producer.apikeys import KeyStore
from tests.support import Stack, start_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def keyed(tmp_path: Path, redis_server: str, redis_client: redis.Redis) -> Iterator[tuple[Stack, str]]:
    stack = start_stack(tmp_path, redis_server, tmp_path / "cache", SDQ_AUTH="required")
    try:
        yield stack, KeyStore(redis_client).create("acme")[1]
    finally:
        stack.stop()


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


_EMPTY_ITEMS = 40 * 1024 * 1024 // 3
#: 40 MB of `{}` items in each form a batch may take: (content type, body).
FORTY_MB = {
    "json-lines": ("application/x-ndjson", b"{}\n" * _EMPTY_ITEMS),
    "array": ("application/json", b"[" + b"{}," * _EMPTY_ITEMS + b"{}]"),
    "object": ("application/json", b'{"defaults": {"steps": 2}, "items": [' + b"{}," * _EMPTY_ITEMS + b"{}]}"),
}


@pytest.mark.parametrize(("content_type", "body"), FORTY_MB.values(), ids=FORTY_MB.keys())
def test_a_40mb_batch_is_refused_while_healthz_answers_within_100ms(
    keyed: tuple[Stack, str], content_type: str, body: bytes
) -> None:
    stack, token = keyed
    assert stack.api is not None
    result: dict[str, httpx.Response] = {}

    def submit() -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
        result["batch"] = httpx.post(f"{stack.api_url}/v1/batches", content=body, headers=headers, timeout=120)

    sender = threading.Thread(target=submit)
    latencies: list[float] = []
    before = _rss_bytes(stack.api.pid)
    peak = before
    with httpx.Client(base_url=stack.api_url, timeout=10) as client:
        client.get("/healthz")  # the connection is open before the batch starts
        sender.start()
        while sender.is_alive():
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            peak = max(peak, _rss_bytes(stack.api.pid))
            time.sleep(0.01)
    sender.join()
    assert result["batch"].status_code == 422 and "at most 10000 items" in result["batch"].text
    # Parsed as it streams, stopping at item 10 001: neither the body (40 MB) nor 13 million dicts (~900 MB)
    # are ever held.
    assert peak - before < 30 * 1024 * 1024, (before, peak)
    assert len(latencies) >= 3, latencies
    # The body still arrives through this loop (h11), so on a shared 2-core machine a rare answer runs past 100 ms
    # (seen: up to 125 ms, twice in a run); before, every answer waited for the whole parse (seconds).
    ranked = sorted(latencies)
    assert ranked[int(len(ranked) * 0.9) - 1] < 0.1 and ranked[-1] < 0.5, ranked[-5:]


def test_fifty_unauthenticated_60mb_uploads_are_refused_unread(keyed: tuple[Stack, str]) -> None:
    stack, _ = keyed
    assert stack.api is not None
    size = 60 * 1024 * 1024
    before = _rss_bytes(stack.api.pid)
    peak = [before]
    statuses: list[bytes] = []

    def upload() -> None:
        with socket.create_connection(("127.0.0.1", stack.port), timeout=20) as conn:
            head = "POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            conn.sendall(f"{head}Content-Length: {size}\r\n\r\n".encode())
            chunk = b"{}\n" * 21845
            sent = 0
            try:
                while sent < size:
                    conn.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # answered and closed before the body was read: what is wanted
            try:
                statuses.append(conn.recv(64))
            except OSError:
                statuses.append(b"")

    threads = [threading.Thread(target=upload) for _ in range(50)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak.append(_rss_bytes(stack.api.pid))
        time.sleep(0.05)
    answered = [s for s in statuses if s]
    assert answered and all(s.startswith(b"HTTP/1.1 401") for s in answered), statuses[:3]
    assert max(peak) - before < 200 * 1024 * 1024, (before, max(peak))  # 50 bodies buffered would be 3 GB
