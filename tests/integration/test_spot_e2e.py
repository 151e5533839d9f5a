"""Spot notices end to end, per cloud: the job in flight is checkpointed, handed off, and resumed by another worker
process; it completes exactly once and its image matches an uninterrupted run.

Real processes (`sdq api`, two `sdq worker`s), a real redis-server, local storage and the tiny model. The notices
come from `tests/fake_metadata.py`, a local HTTP server speaking each cloud's metadata protocol (no emulator of
those services exists).
"""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from bench.spot import run_spot_interruption, spot_worker_env
from producer import JobRequest, JobStatus
from tests.fake_metadata import FakeMetadata
from tests.support import Stack, start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: Long enough on a CPU to be caught mid-run; each cloud's test uses a scheduler with state that must survive.
SCHEDULER = {"aws": "euler_a", "gcp": "dpmpp_2m", "azure": "unipc"}


@pytest.fixture
def fake() -> Iterator[FakeMetadata]:
    with FakeMetadata() as server:
        yield server


@pytest.fixture
def stack(redis_server: str, model_cache: Path, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(tmp_path, redis_server, model_cache, SDQ_TORCH_THREADS="1", SDQ_IDLE_TIMEOUT_S="0")
    yield running
    running.stop()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
def test_a_spot_notice_hands_the_job_off_and_another_worker_resumes_it(
    stack: Stack, fake: FakeMetadata, tmp_path: Path, provider: str
) -> None:
    request = JobRequest(
        prompt="a lighthouse", width=256, height=256, steps=40, seed=11, num_images=2, scheduler=SCHEDULER[provider]
    )
    connection = redis.Redis.from_url(stack.env["SDQ_REDIS_URL"])
    with stack.client() as client:
        held: list[str] = []

        def hold_a_second_job() -> None:
            """A second job that worker A fetches (prefetch 1) but cannot start while the first one runs."""
            held.append(client.submit("held", width=64, height=64, steps=2, seed=5).id)
            wait_for(lambda: connection.llen("dramatiq:sdq-generate") == 0, timeout_s=60)

        run = run_spot_interruption(
            stack,
            client,
            fake,
            provider,
            request,
            poll_s=0.2,
            interrupt_at_step=3,
            first_env={"SDQ_WORKER_THREADS": "1", "SDQ_PREFETCH": "1"},
            before_notice=hold_a_second_job,
        )

        # The interrupted worker checkpointed, handed the job back (fenced), and exited on its own with 0.
        assert run.interrupted_exit_code == 0
        handed = run.handed_off
        assert handed.status is JobStatus.QUEUED and handed.attempts == 1 and handed.handoffs == 1
        assert handed.checkpoint is not None and handed.checkpoint.attempt == 1
        assert 3 <= handed.checkpoint.step < 40 and run.steps_lost == 0
        if provider == "azure":  # acknowledged only once the job was safe
            assert fake.state.acknowledged == ["evt-1"]

        # Another worker resumed it: one success, on the second attempt, from the checkpoint.
        final = run.final
        assert final.status is JobStatus.SUCCEEDED, final.error
        assert final.attempts == 2 and final.handoffs == 1 and len(final.outputs) == 2
        logs = [path.read_text() for path in sorted((tmp_path / "logs").glob("worker-*.log"))]
        assert (
            f"job {run.job_id} succeeded" not in logs[0] and f"handed off at step {handed.checkpoint.step}" in logs[0]
        )
        assert logs[1].count(f"job {run.job_id} succeeded") == 1
        assert f"resuming at step {handed.checkpoint.step} of" in logs[1]

        # The held job went back at once, unstarted: its only attempt was on worker B.
        assert "handed back 1 held message(s)" in logs[0]
        second = client.wait(held[0], timeout_s=120)
        assert second.status is JobStatus.SUCCEEDED and second.attempts == 1 and second.handoffs == 0

        # One set of objects, and the checkpoint is gone.
        objects = tmp_path / "data" / "objects"
        stored = [p for p in (objects / "jobs" / run.job_id).rglob("*") if p.is_file() and not p.name.startswith(".")]
        done = client.get(run.job_id)
        assert sorted(p.relative_to(objects).as_posix() for p in stored) == sorted(o.key for o in done.outputs)
        assert sorted(p.name for p in stored) == ["0.png", "1.png"]  # under the resuming attempt's keys
        assert not list((objects / "checkpoints").rglob("*.pt"))

        # The same job, uninterrupted, on the same kind of worker: the same images.
        reference = client.wait(client.submit(request).id, timeout_s=300)
        assert reference.status is JobStatus.SUCCEEDED and reference.attempts == 1 and reference.handoffs == 0
        for resumed, whole in zip(final.outputs, reference.outputs, strict=True):
            difference = np.abs(
                _pixels((objects / resumed.key).read_bytes()) - _pixels((objects / whole.key).read_bytes())
            )
            assert difference.max() <= 2, f"image {resumed.key} differs by up to {difference.max()} levels"


def test_sigterm_hands_off_a_job_that_cannot_finish_within_the_shutdown_timeout(stack: Stack, tmp_path: Path) -> None:
    """A Kubernetes eviction (or a cloud's ACPI shutdown) is a SIGTERM: the job checkpoints instead of dying."""
    first = stack.start_worker(SDQ_SHUTDOWN_TIMEOUT_S="5")  # with the 10 s margin: no time to finish
    with stack.client() as client:
        job = client.submit("evicted", width=256, height=256, steps=40, seed=21, scheduler="euler_a")
        wait_for(lambda: (r := client.get(job.id)).progress is not None and r.progress.step >= 3, timeout_s=180)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
        handed = client.get(job.id)
        assert handed.status is JobStatus.QUEUED and handed.handoffs == 1 and handed.checkpoint is not None

        stack.start_worker()
        final = client.wait(job.id, timeout_s=300)
        assert final.status is JobStatus.SUCCEEDED and final.attempts == 2
        log = (tmp_path / "logs" / "worker-1.log").read_text()
        assert f"resuming at step {handed.checkpoint.step} of" in log


def test_a_handed_off_batch_job_goes_back_to_the_batch_queue(stack: Stack, tmp_path: Path) -> None:
    """After a hand-off a batch job keeps its lower priority: it is resent to the batch queue, not the interactive."""
    connection = redis.Redis.from_url(stack.env["SDQ_REDIS_URL"])
    first = stack.start_worker(SDQ_SHUTDOWN_TIMEOUT_S="5")
    with stack.client() as client:
        batch = client.submit_batch(
            [{"prompt": "a batch job", "seed": 31}], defaults={"width": 256, "height": 256, "steps": 40}
        )
        [job_id] = batch.job_ids
        wait_for(lambda: (r := client.get(job_id)).progress is not None and r.progress.step >= 3, timeout_s=180)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
        assert client.get(job_id).handoffs == 1
        assert connection.llen("dramatiq:sdq-batch") == 1 and connection.llen("dramatiq:sdq-generate") == 0

        stack.start_worker()
        final = client.wait(job_id, timeout_s=300)
        assert final.status is JobStatus.SUCCEEDED and final.attempts == 2


def test_an_aws_rebalance_recommendation_lets_the_job_finish_then_the_worker_leaves(
    stack: Stack, fake: FakeMetadata
) -> None:
    worker = stack.start_worker(**spot_worker_env("aws", fake.url, poll_s=0.2))
    with stack.client() as client:
        job = client.submit("finish me", width=256, height=256, steps=40, seed=4)
        wait_for(lambda: (r := client.get(job.id)).progress is not None and r.progress.step >= 3, timeout_s=180)
        fake.aws_rebalance()
        assert worker.wait(timeout=300) == 0  # it leaves once the job is done...
        record = client.get(job.id)
        assert record.status is JobStatus.SUCCEEDED and record.attempts == 1 and record.handoffs == 0  # ...not before
        assert record.checkpoint is None
