"""The whole flow with real processes: SDK → `sdq api` → Redis/Dramatiq → `sdq worker` (tiny model) → storage."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from dramatiq import Message
from PIL import Image

from producer import AsyncClient, Client, JobRecord, JobRequest, JobStatus
from producer.broker import make_broker
from producer.jobs import new_job_id
from producer.store import JobStore
from tests.support import Stack, start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: A job that runs for several seconds on CPU, long enough to be seen running and canceled.
LONG = {"width": 512, "height": 512, "steps": 150}


@pytest.fixture(scope="module")
def stack(redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(tmp_path_factory.mktemp("e2e"), redis_server, model_cache)
    running.start_worker()
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with stack.client() as sdk:
        yield sdk


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_a_job_runs_end_to_end_and_its_url_serves_the_image(client: Client) -> None:
    record = client.wait(client.submit("a lighthouse at dusk", width=96, height=64, steps=4, seed=42).id)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.attempts == 1 and record.worker and record.error is None
    # progress counts real scheduler steps (PNDM, SD's default, runs one more than asked)
    assert record.progress is not None and record.progress.step == record.progress.total >= 4
    t = record.timings
    assert all(v is not None and v >= 0 for v in (t.queue_wait_s, t.load_s, t.inference_s, t.encode_s, t.upload_s))
    [output] = record.outputs
    assert (output.width, output.height, output.seed, output.content_type) == (96, 64, 42, "image/png")
    assert output.key == f"jobs/{record.id}/0.png" and output.url

    response = httpx.get(output.url)  # a plain HTTP client, no SDK
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert len(response.content) == output.bytes
    image = _image(response.content)
    assert (image.format, image.size) == ("PNG", (96, 64))

    broken = output.url.replace("signature=", "signature=x")
    assert httpx.get(broken).status_code == 403


def test_several_images_get_consecutive_seeds_and_the_requested_format(client: Client, tmp_path: Path) -> None:
    record = client.wait(
        client.submit("a fox", width=64, height=64, steps=3, seed=7, num_images=2, output_format="jpeg").id
    )
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert [(o.seed, o.content_type) for o in record.outputs] == [(7, "image/jpeg"), (8, "image/jpeg")]
    files = client.download(record, tmp_path)
    assert [p.name for p in files] == [f"{record.id}-0.jpg", f"{record.id}-1.jpg"]
    assert all(_image(p.read_bytes()).format == "JPEG" for p in files)


def test_same_seed_and_parameters_give_identical_images(client: Client) -> None:
    first, second = (client.wait(client.submit("same", width=64, height=64, steps=3, seed=1234).id) for _ in range(2))
    fetch = [httpx.get(r.outputs[0].url).content for r in (first, second)]  # type: ignore[arg-type]
    assert fetch[0] == fetch[1]


def test_the_async_client(stack: Stack) -> None:
    async def scenario() -> JobRecord:
        async with AsyncClient(stack.api_url) as sdk:
            job = await sdk.submit("async", width=64, height=64, steps=2)
            return await sdk.wait(job.id)

    assert asyncio.run(scenario()).status is JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("model", "code"),
    [("/nonexistent/model", "model_not_found"), ("nonexistent-org/nonexistent-model", "model_not_found")],
)
def test_a_model_that_cannot_be_found_fails_the_job_not_the_worker(client: Client, model: str, code: str) -> None:
    record = client.wait(client.submit("a cat", model=model, width=64, height=64, steps=2).id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None and record.error.code.value == code and model in record.error.message
    assert record.attempts == 1  # a permanent failure is not retried
    assert client.wait(client.submit("still alive", width=64, height=64, steps=1).id).status is JobStatus.SUCCEEDED


def test_cancel_a_running_and_a_queued_job(client: Client, redis_server: str) -> None:
    running = client.submit("long", **LONG)
    wait_for(lambda: (r := client.get(running.id)).progress is not None and r.progress.step > 0)
    # Submitted once the first one runs: the worker holds it (its GPU is busy) but has not started it.
    queued = client.submit("never runs", width=64, height=64, steps=1)

    canceled = client.cancel(queued.id)
    assert canceled.status is JobStatus.CANCELED
    stopping = client.cancel(running.id)
    assert stopping.cancel_requested

    final = client.wait(running.id, timeout_s=60)
    assert final.status is JobStatus.CANCELED
    assert final.progress is not None and final.progress.step < LONG["steps"] and not final.outputs
    wait_for(lambda: redis.Redis.from_url(redis_server).llen("dramatiq:sdq-generate") == 0)
    follow_up = client.wait(client.submit("after", width=64, height=64, steps=1).id)
    assert follow_up.status is JobStatus.SUCCEEDED
    never = client.get(queued.id)
    assert never.status is JobStatus.CANCELED and never.attempts == 0 and never.started_at is None


def test_the_cli_submits_waits_and_downloads(stack: Stack, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "producer.cli",
            "submit",
            "a cli job",
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "2",
            "--out",
            str(tmp_path),
        ],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    record = JobRecord.model_validate_json(result.stdout)
    assert record.status is JobStatus.SUCCEEDED and (tmp_path / f"{record.id}-0.png").exists()

    status = subprocess.run(
        [sys.executable, "-m", "producer.cli", "status", record.id],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert JobRecord.model_validate_json(status.stdout).id == record.id

    bad = subprocess.run(
        [sys.executable, "-m", "producer.cli", "submit", "x", "--width", "65"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "width" in bad.stderr and "Traceback" not in bad.stderr


def test_the_worker_revalidates_every_message(client: Client, redis_server: str) -> None:
    """A message that bypassed the API's validation (another producer, an old version) fails its job cleanly."""
    connection = redis.Redis.from_url(redis_server)
    store = JobStore(connection, ttl_s=3600)
    job_id = new_job_id()
    request = JobRequest(prompt="smuggled", width=64, height=64, steps=1).resolved("tiny")
    store.create(job_id, request)
    bad = {"v": 1, "job_id": job_id, "request": {**request.model_dump(mode="json"), "width": 65}}
    broker = make_broker(connection, heartbeat_timeout_s=60)
    broker.declare_queue("sdq-generate")
    broker.enqueue(Message(queue_name="sdq-generate", actor_name="generate", args=(bad,), kwargs={}, options={}))
    record = client.wait(job_id)
    assert record.status is JobStatus.FAILED
    assert record.error is not None and record.error.code.value == "invalid_input" and "width" in record.error.message


def test_a_truncated_prompt_is_reported_on_the_job(client: Client) -> None:
    record = client.wait(client.submit(" ".join(["a photo of a cat"] * 30), width=64, height=64, steps=1).id)
    assert record.status is JobStatus.SUCCEEDED
    assert any("77" in warning for warning in record.warnings), record.warnings
