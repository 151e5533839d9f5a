"""The job runner in-process, against a real Redis, real local storage and the real tiny pipeline."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import torch

from gpu_worker.executor import GpuExecutor
from gpu_worker.models import LoadedModels
from gpu_worker.runner import JobRunner
from gpu_worker.settings import WorkerSettings
from producer.jobs import JobMessage, JobRequest, JobStatus, new_job_id
from producer.store import JobStore
from storage import LocalStore
from tests.support import wait_for

pytestmark = pytest.mark.redis


class Harness:
    """A runner plus what it writes to, and the messages it re-sent."""

    def __init__(self, redis_client: redis.Redis, model_cache: Path, root: Path, **settings: Any) -> None:
        self.settings = WorkerSettings(worker_id="test-worker", lease_s=30, **settings)
        self.store = JobStore(redis_client, ttl_s=3600)
        self.objects = LocalStore(root)
        self.models = LoadedModels(cache_dir=model_cache, device="cpu", capacity=1)
        self.executor = GpuExecutor(
            self.models, max_images=self.settings.batch_max, wait_ms=self.settings.batch_wait_ms
        ).start()
        self.resent: list[tuple[str, float]] = []
        self.runner = JobRunner(
            self.settings, self.store, self.objects, self.executor, lambda m, d: self.resent.append((m.job_id, d))
        )

    def submit(self, request: JobRequest) -> JobMessage:
        message = JobMessage(job_id=new_job_id(), request=request)
        self.store.create(message.job_id, request)
        return message

    def run_in_thread(self, message: JobMessage) -> threading.Thread:
        thread = threading.Thread(target=self.runner.run, args=(message.model_dump(mode="json"),))
        thread.start()
        return thread

    def run(self, request: JobRequest) -> JobMessage:
        message = self.submit(request)
        self.runner.run(message.model_dump(mode="json"))
        return message


@pytest.fixture
def harness(redis_client: redis.Redis, model_cache: Path, tmp_path: Path) -> Iterator[Harness]:
    running = Harness(redis_client, model_cache, tmp_path / "objects")
    yield running
    running.executor.shutdown()


@pytest.fixture
def oom_on_denoising(harness: Harness) -> Iterator[None]:
    """The UNet raises the real CUDA out-of-memory error on its first call (a forward hook; no patching)."""
    with harness.models.use("tiny") as (pipe, _):
        pass

    def hook(module: Any, args: Any) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = pipe.unet.register_forward_pre_hook(hook)
    yield
    handle.remove()


def test_a_job_succeeds_with_outputs_timings_and_stored_objects(
    harness: Harness, job: Callable[..., JobRequest]
) -> None:
    message = harness.run(job(num_images=2))
    record = harness.store.get(message.job_id)
    assert record.status is JobStatus.SUCCEEDED and record.attempts == 1 and record.worker == "test-worker"
    assert [o.seed for o in record.outputs] == [1234, 1235]
    for output in record.outputs:
        info = harness.objects.head(output.key)
        assert info.size == output.bytes and info.content_type == "image/png"
        # What ran it travels with each object too (the tiny SD model on this CPU: fp32).
        expected = {"job_id": message.job_id, "seed": str(output.seed), "family": "sd", "dtype": "float32"}
        assert info.metadata == expected
    t = record.timings
    assert t.inference_s and t.load_s is not None and t.batch_size == 2
    assert t.queue_wait_s is not None and t.encode_s is not None and t.upload_s is not None


def test_a_message_with_only_the_job_id_runs_the_request_its_record_holds(
    harness: Harness, job: Callable[..., JobRequest]
) -> None:
    # What the job service sends for every new job (JobMessage.wire(job_id)): the request lives in the record only.
    message = harness.submit(job(seed=77))
    harness.runner.run(JobMessage.wire(message.job_id))
    record = harness.store.get(message.job_id)
    assert record.status is JobStatus.SUCCEEDED and [o.seed for o in record.outputs] == [77]


def test_out_of_memory_fails_the_job_with_its_code_and_is_not_retried(
    harness: Harness, job: Callable[..., JobRequest], oom_on_denoising: None
) -> None:
    message = harness.run(job())
    record = harness.store.get(message.job_id)
    assert record.status is JobStatus.FAILED and record.attempts == 1
    assert record.error is not None and record.error.code.value == "out_of_memory"
    assert not record.outputs and not harness.resent


def test_a_job_past_its_time_limit_fails_with_timeout(
    redis_client: redis.Redis, model_cache: Path, tmp_path: Path, job: Callable[..., JobRequest]
) -> None:
    harness = Harness(redis_client, model_cache, tmp_path, job_timeout_s=1e-6)
    message = harness.run(job(steps=10))
    harness.executor.shutdown()
    record = harness.store.get(message.job_id)
    assert record.status is JobStatus.FAILED and record.error is not None
    assert record.error.code.value == "timeout" and not record.outputs


def test_a_canceled_job_is_not_run(harness: Harness, job: Callable[..., JobRequest]) -> None:
    message = harness.submit(job())
    harness.store.cancel(message.job_id)
    harness.runner.run(message.model_dump(mode="json"))
    record = harness.store.get(message.job_id)
    assert record.status is JobStatus.CANCELED and record.attempts == 0 and record.started_at is None


def test_a_job_held_by_a_live_attempt_is_resent_for_later_not_run_twice(
    harness: Harness, job: Callable[..., JobRequest]
) -> None:
    message = harness.submit(job())
    harness.store.claim(message.job_id, worker="other", lease_s=30, max_attempts=3)  # alive elsewhere
    harness.runner.run(message.model_dump(mode="json"))
    record = harness.store.get(message.job_id)
    assert record.status is JobStatus.RUNNING and record.worker == "other" and record.attempts == 1
    [(job_id, delay_s)] = harness.resent
    assert job_id == message.job_id and 29 < delay_s <= 31


def test_jobs_run_by_several_threads_share_one_pipeline_call(
    redis_client: redis.Redis, model_cache: Path, tmp_path: Path, job: Callable[..., JobRequest]
) -> None:
    harness = Harness(redis_client, model_cache, tmp_path, batch_max=3, batch_wait_ms=1000)
    try:
        messages = [harness.submit(job(prompt=f"prompt {n}", seed=n)) for n in range(3)]
        for thread in [harness.run_in_thread(m) for m in messages]:
            thread.join(timeout=120)
    finally:
        harness.executor.shutdown()
    assert harness.executor.pipeline_calls == 1
    for message in messages:
        record = harness.store.get(message.job_id)
        assert record.status is JobStatus.SUCCEEDED and record.timings.batch_size == 3
        assert record.progress is not None and record.progress.step == record.progress.total


def test_a_job_waiting_for_the_gpu_stays_queued_and_cancels_at_once(
    harness: Harness, job: Callable[..., JobRequest]
) -> None:
    busy = harness.submit(job(steps=150, width=128, height=128))
    waiting = harness.submit(job(steps=3))  # incompatible with the running batch: it waits for the next one
    busy_thread = harness.run_in_thread(busy)
    wait_for(lambda: (p := harness.store.get(busy.job_id).progress) is not None and p.step > 0)
    waiting_thread = harness.run_in_thread(waiting)
    wait_for(lambda: len(harness.executor.queue) == 1)
    assert harness.store.get(waiting.job_id).status is JobStatus.QUEUED  # held by the worker, not yet claimed
    assert harness.store.cancel(waiting.job_id) is JobStatus.CANCELED
    harness.store.cancel(busy.job_id)
    for thread in (busy_thread, waiting_thread):
        thread.join(timeout=120)
    never = harness.store.get(waiting.job_id)
    assert never.status is JobStatus.CANCELED and never.attempts == 0 and never.started_at is None
    assert harness.store.get(busy.job_id).status is JobStatus.CANCELED
