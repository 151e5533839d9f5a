"""Event streams within limits, against real `sdq api` processes on a real Redis (no worker: jobs stay queued, so
their streams stay open): the per-key cap shared by every API process, slots freed on close and pruned after a
crash, the maximum duration and its resume with `Last-Event-ID`, revocation, and uvicorn's own concurrency limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from producer import Client, JobStatus
from producer.apikeys import KeyStore
from tests.support import Stack, start_stack, wait_for

pytestmark = pytest.mark.redis

SMALL = {"width": 64, "height": 64, "steps": 2}
CAP, MAX_STREAM_S, HEARTBEAT_S = 2, 3.0, 0.5
LIMITS = {
    "SDQ_AUTH": "required",
    "SDQ_MAX_STREAMS_PER_KEY": str(CAP),
    "SDQ_MAX_STREAM_S": str(MAX_STREAM_S),
    "SDQ_STREAM_HEARTBEAT_S": str(HEARTBEAT_S),
}


@pytest.fixture(scope="module")
def stack(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("streams")
    running = start_stack(tmp, redis_server, tmp / "models", **LIMITS)
    yield running
    running.stop()


@pytest.fixture
def keys(redis_server: str) -> KeyStore:
    return KeyStore(redis.Redis.from_url(redis_server))


def _token(keys: KeyStore) -> str:
    return keys.create("t1")[1]


def _job(stack: Stack, token: str) -> str:
    response = httpx.post(f"{stack.api_url}/v1/jobs", json={"prompt": "p", **SMALL}, headers=_auth(token), timeout=10)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def _open(http: httpx.Client, path: str, token: str, streams: ExitStack) -> httpx.Response:
    """A stream opened and held until `streams` closes (its status read, its body not)."""
    return streams.enter_context(http.stream("GET", path, headers=_auth(token)))


def test_the_stream_beyond_a_keys_cap_gets_429_and_a_closed_one_frees_its_slot(stack: Stack, keys: KeyStore) -> None:
    token, other = _token(keys), _token(keys)
    job = _job(stack, token)
    with httpx.Client(base_url=stack.api_url, timeout=10) as http, ExitStack() as held:
        first = _open(http, f"/v1/jobs/{job}/events", token, held)
        second = _open(http, "/v1/events?recent=true", token, held)  # both routes count against the one cap
        assert (first.status_code, second.status_code) == (200, 200)
        refused = http.get(f"/v1/jobs/{job}/events", headers=_auth(token))
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
        assert "SDQ_MAX_STREAMS_PER_KEY=2" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert http.get("/v1/events", headers=_auth(token)).status_code == 429
        with http.stream("GET", "/v1/events?recent=true", headers=_auth(other)) as theirs:
            assert theirs.status_code == 200  # another key has its own slots
        first.close()

        def admitted() -> bool:
            with http.stream("GET", f"/v1/jobs/{job}/events", headers=_auth(token)) as again:
                return again.status_code == 200

        wait_for(admitted, timeout_s=5)


def test_a_crashed_api_processes_slots_are_pruned(
    stack: Stack, keys: KeyStore, redis_server: str, tmp_path: Path
) -> None:
    token = _token(keys)
    job = _job(stack, token)
    doomed = start_stack(tmp_path, redis_server, tmp_path / "models", **LIMITS)
    try:
        streams = [
            subprocess.Popen(["curl", "-sN", "-H", f"Authorization: Bearer {token}", f"{doomed.api_url}{path}"])
            for path in (f"/v1/jobs/{job}/events", "/v1/events?recent=true")
        ]
        refused = lambda: httpx.get(f"{stack.api_url}/v1/events", headers=_auth(token), timeout=5).status_code == 429  # noqa: E731
        wait_for(refused, timeout_s=10)  # the other process holds both slots
        assert doomed.api is not None
        os.killpg(doomed.api.pid, signal.SIGKILL)  # no clean close: its slots are never freed, only pruned
        crashed_at = time.monotonic()
        with httpx.Client(base_url=stack.api_url, timeout=10) as http:

            def admitted() -> bool:
                with http.stream("GET", "/v1/events", headers=_auth(token)) as response:
                    return response.status_code == 200

            wait_for(admitted, timeout_s=10)
        # Pruned after 3 missed heartbeats (1.5 s here), not at the holder set's TTL or never.
        assert time.monotonic() - crashed_at < 3 * HEARTBEAT_S + 3
        for curl in streams:
            curl.kill()
            curl.wait()
    finally:
        doomed.stop()


def _events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Each event's fields (`event`, `data`, `id`, `retry`) as they come, until the server ends the stream."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = fields.get(name, "") + value
        elif "data" in fields:
            yield fields
            fields = {}


def test_a_stream_ends_at_its_maximum_duration_and_resumes_after_its_last_event_id(
    stack: Stack, keys: KeyStore
) -> None:
    token = _token(keys)
    job = _job(stack, token)
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        started = time.monotonic()
        with http.stream("GET", f"/v1/jobs/{job}/events", headers=_auth(token)) as response:
            first = list(_events(response))  # ends by itself: the job stays queued
        assert MAX_STREAM_S <= time.monotonic() - started < MAX_STREAM_S + 5
        assert first and all(e["id"].isdigit() and e["retry"] == "1000" for e in first)
        assert first[0]["event"] == "status" and '"queued"' in first[0]["data"]
        last = first[-1]["id"]
        # What happens while the client is away is not lost: the resumed stream starts with the current record.
        assert http.post(f"/v1/jobs/{job}/cancel", headers=_auth(token)).status_code == 200
        headers = _auth(token, **{"Last-Event-ID": last})
        with http.stream("GET", f"/v1/jobs/{job}/events", headers=headers) as response:
            resumed = list(_events(response))
    assert resumed[0]["id"] == str(int(last) + 1)  # the ids go on where they left off
    assert [e["event"] for e in resumed] == ["status"] and '"canceled"' in resumed[0]["data"]


class _Recording(httpx.HTTPTransport):
    """The real transport, noting each request's path and `Last-Event-ID`."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.url.path, request.headers.get("Last-Event-ID")))
        return super().handle_request(request)


def test_the_sdk_resumes_a_stream_the_server_ended(stack: Stack, keys: KeyStore) -> None:
    token = _token(keys)
    job = _job(stack, token)
    transport = _Recording()

    def cancel() -> None:
        with Client(stack.api_url, api_key=token) as other:
            other.cancel(job)

    canceler = threading.Timer(2.5 * MAX_STREAM_S, cancel)
    canceler.start()
    try:
        with Client(stack.api_url, api_key=token, transport=transport) as client:
            done = client.wait(job, timeout_s=60)
    finally:
        canceler.cancel()
    assert done.status is JobStatus.CANCELED
    streams = [last_id for path, last_id in transport.requests if path.endswith("/events")]
    assert len(streams) >= 3 and len(streams) == len(transport.requests)  # resumed each time, never polled
    assert streams[0] is None and all(last_id and last_id.isdigit() for last_id in streams[1:])
    assert [int(i) for i in streams[1:]] == sorted(int(i) for i in streams[1:])  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/v1/jobs/{job}/events", "/v1/events?recent=true"])
def test_revoking_a_key_ends_its_open_streams_within_seconds(stack: Stack, keys: KeyStore, path: str) -> None:
    key, token = keys.create("t1")
    job = _job(stack, token)
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        opened = time.monotonic()
        with http.stream("GET", path.format(job=job), headers=_auth(token)) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data:"))  # the stream is live
            keys.revoke(key.id)
            revoked_at = time.monotonic()
            for _ in lines:  # drained: the server ends it
                pass
            ended = time.monotonic()
    assert ended - opened < MAX_STREAM_S  # ended by the revocation, not by its maximum duration
    assert ended - revoked_at < HEARTBEAT_S + 1.5
    assert httpx.get(f"{stack.api_url}/v1/jobs/{job}", headers=_auth(token), timeout=10).status_code == 401


def test_sdq_api_hands_its_concurrency_limit_and_backlog_to_uvicorn(redis_server: str, tmp_path: Path) -> None:
    # uvicorn counts the connection asking too: with a limit of 3, two held streams leave no room for a third.
    env = {"SDQ_API_LIMIT_CONCURRENCY": "3", "SDQ_API_BACKLOG": "77"}
    small = start_stack(tmp_path, redis_server, tmp_path / "models", **env)
    try:
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{small.port}"], capture_output=True, text=True)
        assert listening.stdout.split()[2] == "77"  # a listening socket's Send-Q is its backlog
        with httpx.Client(base_url=small.api_url, timeout=10) as http, ExitStack() as held:
            for _ in range(2):
                assert _open_plain(http, held).status_code == 200
            busy = httpx.get(f"{small.api_url}/healthz", timeout=10)
            assert (busy.status_code, busy.text) == (503, "Service Unavailable")  # uvicorn's, before the app
            held.close()
            wait_for(lambda: httpx.get(f"{small.api_url}/healthz", timeout=10).status_code == 200, timeout_s=10)
    finally:
        small.stop()


def _open_plain(http: httpx.Client, held: ExitStack) -> httpx.Response:
    return held.enter_context(http.stream("GET", "/v1/events?recent=true"))


def test_a_queued_jobs_stream_tells_its_new_place_in_line(stack: Stack, keys: KeyStore) -> None:
    # The shared poller reads places in line for every stream at once; this stream's moves when the job ahead goes.
    token = _token(keys)
    ahead, job = _job(stack, token), _job(stack, token)
    with (
        httpx.Client(base_url=stack.api_url, timeout=30) as http,
        http.stream("GET", f"/v1/jobs/{job}/events", headers=_auth(token)) as response,
    ):
        events = _events(response)
        first = json.loads(next(events)["data"])
        assert http.post(f"/v1/jobs/{ahead}/cancel", headers=_auth(token)).status_code == 200
        moved = next(e for e in events if e["event"] == "queue")
    assert json.loads(moved["data"])["queue_position"] == first["queue_position"] - 1
