"""Batching with real processes: SDK → `sdq api` → Redis → one `sdq worker` (tiny model) → an S3 server.

Jobs that reach the worker together share one pipeline call, keep their own seeds, progress and cancellation, and
the worker's Prometheus endpoint reports what happened.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from producer import JobStatus
from tests.emulators import S3Server
from tests.support import Stack, free_port, start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(
    redis_server: str, model_cache: Path, moto_s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    moto_s3_server.create_bucket("batching")
    running = start_stack(
        tmp_path_factory.mktemp("batching"),
        redis_server,
        model_cache,
        SDQ_STORAGE_URL=moto_s3_server.url("batching", "sdq"),
        **moto_s3_server.env,
    )
    yield running
    running.stop()


def _pixels(url: str | None) -> np.ndarray:
    response = httpx.get(url or "", timeout=30)
    assert response.status_code == 200
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)


def _metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples if not s.labels}


def test_jobs_queued_together_run_in_one_batch_and_match_the_same_job_alone(stack: Stack) -> None:
    port = free_port()
    with stack.client() as client:
        # Queued before the worker starts, so its four threads take them at once and the executor batches them.
        ids = [client.submit(f"prompt {n}", width=64, height=64, steps=4, seed=100 + n).id for n in range(4)]
        stack.start_worker(
            SDQ_BATCH_MAX="4",
            SDQ_WORKER_THREADS="4",
            SDQ_BATCH_WAIT_MS="5000",
            SDQ_METRICS_PORT=str(port),
            SDQ_METRICS_HOST="127.0.0.1",
        )
        records = [client.wait(job_id, timeout_s=300) for job_id in ids]
        for record in records:
            assert record.status is JobStatus.SUCCEEDED, record.error
            t = record.timings
            assert t.batch_size == 4 and t.inference_s and t.encode_s is not None and t.upload_s is not None
            assert t.queue_wait_s is not None and t.load_s is not None
            assert record.progress is not None and record.progress.step == record.progress.total
        assert len({r.outputs[0].key for r in records}) == 4

        alone = client.wait(client.submit("prompt 0", width=64, height=64, steps=4, seed=100).id, timeout_s=300)
        assert alone.status is JobStatus.SUCCEEDED and alone.timings.batch_size == 1
        # The same job batched and alone: the same image up to the float noise of a larger batch.
        assert np.abs(_pixels(records[0].outputs[0].url) - _pixels(alone.outputs[0].url)).max() <= 2

        # The runner counts a job just after settling it: poll until the last one is in.
        metrics = wait_for(lambda: (m := _metrics(port)).get("sdq_images_total") == 5 and m)
        assert metrics["sdq_pipeline_calls_total"] == 2 and metrics["sdq_batch_images_sum"] == 5
        assert 0 < metrics["sdq_busy_fraction"] <= 1
        assert metrics["sdq_gpu_available"] in (0.0, 1.0)


@pytest.mark.timeout(900)
def test_canceling_one_job_of_a_running_batch_keeps_the_other(stack: Stack) -> None:
    with stack.client() as client:
        # Submitted back to back: the second one joins the first one's batch (the worker waits 5 s for company).
        first, second = (client.submit("long", width=96, height=96, steps=150, seed=s) for s in (1, 2))
        wait_for(lambda: all((p := client.get(j.id).progress) and p.step > 1 for j in (first, second)), 600)
        assert client.cancel(first.id).cancel_requested
        canceled = client.wait(first.id, timeout_s=300)
        kept = client.wait(second.id, timeout_s=300)
    assert canceled.status is JobStatus.CANCELED and not canceled.outputs
    assert canceled.progress is not None and canceled.progress.step < canceled.progress.total
    assert kept.status is JobStatus.SUCCEEDED and kept.timings.batch_size == 2 and len(kept.outputs) == 1
