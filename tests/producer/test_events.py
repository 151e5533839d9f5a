"""Live progress over Server-Sent Events with real processes: `sdq api`, a `sdq worker` on the tiny model, Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from producer import AsyncClient, Client, JobRecord, JobStatus
from producer.errors import JobNotFoundError
from tests.support import Stack, start_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: Long enough on CPU for progress reports to be seen (the stream looks every 0.1 s) yet quick on a loaded machine.
STEPPED = {"width": 128, "height": 128, "steps": 30}


@pytest.fixture(scope="module")
def stack(redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(tmp_path_factory.mktemp("events"), redis_server, model_cache)
    running.start_worker(SDQ_PROGRESS_INTERVAL_S="0.05")
    yield running
    running.stop()


def _events(stack: Stack, job_id: str) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs of the job's stream, parsed by hand from the wire format, until the server closes it."""
    event, data = "message", ""
    with httpx.stream("GET", f"{stack.api_url}/v1/jobs/{job_id}/events", timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                if name == "event":
                    event = value
                elif name == "data":
                    data += value
                continue
            if data:  # a blank line after a keep-alive comment dispatches nothing
                yield event, json.loads(data)
            event, data = "message", ""


def test_the_stream_yields_status_and_progress_until_terminal(stack: Stack) -> None:
    with stack.client() as client:
        job = client.submit("a lighthouse", **STEPPED)
    events = list(_events(stack, job.id))
    names = [name for name, _ in events]
    assert names[0] == "status" and events[0][1]["id"] == job.id
    assert names[-1] == "status" and events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["outputs"][0]["url"]  # the final record carries its download links
    steps = [data["step"] for name, data in events if name == "progress"]
    assert len(steps) >= 1 and steps == sorted(steps)
    assert all(data["total"] >= 30 for n, data in events if n == "progress")
    statuses = [data["status"] for name, data in events if name == "status"]
    assert "running" in statuses and statuses.count("succeeded") == 1


def test_a_canceled_job_ends_its_stream(stack: Stack) -> None:
    with stack.client() as client:
        job = client.submit("a lighthouse", width=512, height=512, steps=150)
        stream = _events(stack, job.id)
        for name, _ in stream:
            if name == "progress":
                client.cancel(job.id)
                break
        last = [data for name, data in stream if name == "status"][-1]
    assert last["status"] == "canceled"


class _Recording(httpx.HTTPTransport):
    """The real transport, noting each path requested."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def test_sdk_wait_follows_the_stream(stack: Stack) -> None:
    transport = _Recording()
    updates: list[JobRecord] = []
    with Client(stack.api_url, transport=transport) as client:
        job = client.submit("a lighthouse", **STEPPED)
        done = client.wait(job.id, on_update=updates.append)
    assert done.status is JobStatus.SUCCEEDED and done.outputs[0].url
    assert any(u.progress is not None and u.status is JobStatus.RUNNING for u in updates)
    assert transport.paths == ["/v1/jobs", f"/v1/jobs/{job.id}/events"]  # no polling


class _NoStreams(_Recording):
    # Stands in for an older server or a buffering proxy: the events route is missing.
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            self.paths.append(request.url.path)
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "Not Found"}})
        return super().handle_request(request)


def test_sdk_wait_falls_back_to_polling(stack: Stack) -> None:
    transport = _NoStreams()
    with Client(stack.api_url, transport=transport) as client:
        job = client.submit("a lighthouse", width=64, height=64, steps=2)
        done = client.wait(job.id, poll_interval_s=0.05)
    assert done.status is JobStatus.SUCCEEDED
    assert transport.paths.count(f"/v1/jobs/{job.id}") >= 1


def test_async_wait_follows_the_stream(stack: Stack) -> None:
    updates: list[JobRecord] = []

    async def scenario() -> JobRecord:
        async with AsyncClient(stack.api_url) as client:
            job = await client.submit("a lighthouse", **STEPPED)
            return await client.wait(job.id, on_update=updates.append)

    assert asyncio.run(scenario()).status is JobStatus.SUCCEEDED
    assert any(u.progress is not None for u in updates)


def test_unknown_jobs_get_404_not_a_stream(stack: Stack) -> None:
    response = httpx.get(f"{stack.api_url}/v1/jobs/{'0' * 32}/events", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    with Client(stack.api_url) as client, pytest.raises(JobNotFoundError):
        client.wait("0" * 32)
