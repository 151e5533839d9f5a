"""An attempt that lost its job (its lease lapsed, the janitor requeued it, another worker took it) changes nothing
when it finishes: it writes beside the winner's images, never over them, deletes what it wrote, and leaves the
checkpoint it resumed from for the attempt that owns the job. Real Redis (the real claim/reap/settle scripts),
real local storage and the real tiny pipeline; the takeover is run from inside the object store's `put`, at the
moment the losing attempt starts to upload (the one place a real stall would have to happen for this to matter)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gpu_worker.executor import GpuExecutor
from gpu_worker.models import LoadedModels
from gpu_worker.runner import JobRunner
from gpu_worker.settings import WorkerSettings
from producer.jobs import CheckpointRef, JobMessage, JobRequest, JobStatus, Output, OutputFormat, new_job_id, output_key
from producer.store import JobStore
from storage import LocalStore

pytestmark = pytest.mark.redis


class TakeoverStore(LocalStore):
    """Local storage that runs `on_first_put` once, as the first object of a job lands."""

    on_first_put: Callable[[], None] | None = None

    def put(self, key: str, data: bytes, **kwargs: Any) -> Any:
        hook, self.on_first_put = self.on_first_put, None
        if hook is not None:
            hook()
        return super().put(key, data, **kwargs)


@pytest.fixture
def world(
    redis_client: redis.Redis, model_cache: Path, tmp_path: Path
) -> Iterator[tuple[JobStore, TakeoverStore, JobRunner]]:
    settings = WorkerSettings(worker_id="loser", lease_s=30)
    store = JobStore(redis_client, ttl_s=3600)
    objects = TakeoverStore(tmp_path / "objects")
    models = LoadedModels(cache_dir=model_cache, device="cpu", capacity=1)
    executor = GpuExecutor(models, max_images=settings.batch_max, wait_ms=settings.batch_wait_ms).start()
    resent: list[str] = []
    runner = JobRunner(settings, store, objects, executor, lambda m, d: resent.append(m.job_id))
    yield store, objects, runner
    executor.shutdown()
    assert not resent  # a lost attempt sends no message of its own for the job


def _take_over(store: JobStore, job_id: str) -> int:
    """What the janitor and a second worker do to a stalled attempt 1: reap it, claim the job again."""
    assert store.reap(job_id, store.get(job_id).attempts, grace_s=-3600, max_attempts=5, note="stalled").outcome
    claim = store.claim(job_id, worker="winner", lease_s=30, max_attempts=5)
    return claim.attempt


def test_a_lost_attempt_never_overwrites_the_winners_images_and_deletes_its_own(
    world: tuple[JobStore, TakeoverStore, JobRunner], job: Callable[..., JobRequest]
) -> None:
    store, objects, runner = world
    request = job(num_images=2)
    job_id = new_job_id()
    store.create(job_id, request)
    winner: list[Output] = []

    def winner_finishes() -> None:
        attempt = _take_over(store, job_id)
        key = output_key(job_id, 0, OutputFormat.PNG, attempt)
        LocalStore.put(objects, key, b"the winner's image", content_type="image/png")
        winner.append(Output(key=key, content_type="image/png", bytes=18, width=64, height=64, seed=1234))
        assert store.settle(job_id, attempt, JobStatus.SUCCEEDED, outputs=winner)

    objects.on_first_put = winner_finishes
    runner.run(JobMessage.wire(job_id))

    record = store.get(job_id)
    assert record.status is JobStatus.SUCCEEDED and record.worker == "winner" and record.attempts == 2
    assert record.outputs == winner
    assert winner[0].key != output_key(job_id, 0, OutputFormat.PNG, 1)  # attempt-scoped keys
    assert objects.get(winner[0].key) == b"the winner's image"
    assert [info.key for info in objects.list(f"jobs/{job_id}/")] == [winner[0].key]  # the loser's are deleted


def test_a_lost_attempt_leaves_the_checkpoint_it_resumed_from_to_the_attempt_that_owns_the_job(
    world: tuple[JobStore, TakeoverStore, JobRunner], job: Callable[..., JobRequest]
) -> None:
    store, objects, runner = world
    job_id = new_job_id()
    store.create(job_id, job())
    # An earlier attempt was handed off with a checkpoint (what a spot notice does).
    first = store.claim(job_id, worker="earlier", lease_s=30, max_attempts=5).attempt
    pointer = CheckpointRef(key=f"checkpoints/{job_id}/1.pt", step=2, attempt=first)
    LocalStore.put(objects, pointer.key, b"not a real snapshot: resumed from step 0", content_type="application/x")
    assert store.settle(job_id, first, JobStatus.QUEUED, worker="", checkpoint=pointer.model_dump_json())

    objects.on_first_put = lambda: _take_over(store, job_id)  # the winner is still running when the loser ends
    runner.run(JobMessage.wire(job_id))

    record = store.get(job_id)
    assert record.status is JobStatus.RUNNING and record.worker == "winner" and record.attempts == 3
    assert record.checkpoint == pointer and not record.outputs
    assert objects.get(pointer.key)  # still there for the winner to resume from
    assert not list(objects.list(f"jobs/{job_id}/"))
