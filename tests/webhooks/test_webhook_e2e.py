"""Webhooks with the real processes: `sdq api`, a GPU worker (tiny model on CPU) and `sdq webhooks`.

The worker never calls a webhook: its Redis transitions feed the event stream, and the webhook process delivers.
Reports the latency from the job's recorded finish to the receiver's arrival (printed; run with -s to see it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from producer import JobStatus
from producer.jobs import WebhookEvent
from producer.webhooks.signing import new_secret
from tests.support import Stack, start_stack
from tests.webhooks.receivers import receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SECRET = new_secret()


@pytest.fixture(scope="module")
def stack(redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    env = {"SDQ_WEBHOOK_SECRETS": SECRET, "SDQ_WEBHOOK_ALLOW": "127.0.0.1/32", "SDQ_WEBHOOK_PROGRESS_INTERVAL_S": "0"}
    running = start_stack(tmp_path_factory.mktemp("hooks-e2e"), redis_server, model_cache, **env)
    running.start_worker()
    yield running
    running.stop()


def test_a_real_job_sends_started_progress_and_one_succeeded_event_all_signed(stack: Stack) -> None:
    with receiver() as got, stack.client() as client:
        events = ["job.started", "job.progress", "job.succeeded", "job.failed"]
        job = client.submit("a lighthouse", width=64, height=64, steps=6, seed=1, webhook_url=got.url,
                            webhook_events=events)  # fmt: skip
        record = client.wait(job.id)
        assert record.status is JobStatus.SUCCEEDED, record.error

        def kinds() -> list[str]:
            return [json.loads(r.body)["type"] for r in got.requests]

        while "job.succeeded" not in kinds():
            got.wait_for(len(got.requests) + 1, timeout_s=30)
    for request in got.requests:
        Webhook(SECRET).verify(request.body, request.headers)
    parsed = [WebhookEvent.model_validate_json(r.body) for r in got.requests]
    assert [e.type.value for e in parsed].count("job.succeeded") == 1
    assert [e.type.value for e in parsed].count("job.started") == 1
    assert any(e.type.value == "job.progress" for e in parsed)
    final = next(r for r, e in zip(got.requests, parsed, strict=True) if e.type.value == "job.succeeded")
    assert record.finished_at is not None
    latency_ms = (final.wall_s - record.finished_at.timestamp()) * 1000
    print(f"job.succeeded arrived {latency_ms:.0f} ms after the job finished")
    assert latency_ms < 10_000
