"""A job that kills its worker is not redelivered forever: it fails after `max_attempts` runs."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from producer import JobStatus
from tests.support import start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_worker_killed_mid_job_three_times_fails_the_job(
    redis_server: str, model_cache: Path, tmp_path: Path
) -> None:
    redis.Redis.from_url(redis_server).flushdb()
    # Short heartbeat and lease so a dead worker's job comes back within seconds, not minutes.
    stack = start_stack(tmp_path, redis_server, model_cache, SDQ_HEARTBEAT_TIMEOUT_S="1", SDQ_LEASE_S="1")
    try:
        with stack.client() as client:
            job = client.submit("a job that crashes its worker", width=512, height=512, steps=150)
            for attempt in (1, 2, 3):
                worker = stack.start_worker()
                wait_for(
                    lambda a=attempt: (r := client.get(job.id)).attempts == a and r.progress is not None, timeout_s=90
                )
                worker.send_signal(signal.SIGKILL)  # like the OOM killer or a spot reclaim
                worker.wait()
            record = client.get(job.id)
            assert record.status is JobStatus.RUNNING and record.attempts == 3

            stack.start_worker()  # the next worker to receive it must give up instead of running it a 4th time
            record = client.wait(job.id, timeout_s=90)
            assert record.status is JobStatus.FAILED and record.attempts == 3
            assert record.error is not None and record.error.code.value == "worker_lost"
            # and that worker is still healthy
            assert client.wait(client.submit("next", width=64, height=64, steps=1).id).status is JobStatus.SUCCEEDED
    finally:
        stack.stop()
