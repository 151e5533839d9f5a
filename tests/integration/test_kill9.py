"""`kill -9` of a worker mid-job, no other traffic: a second live worker completes the job, promptly.

The dead worker's message sits in its Dramatiq ack set; the live worker's heartbeat middleware runs queue
maintenance every heartbeat_timeout/4, which returns messages of workers silent for over heartbeat_timeout. The
job's lease (SDQ_LEASE_S) has lapsed by then, so the live worker claims attempt 2 at once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer import JobStatus
from tests.support import Stack, start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HEARTBEAT_TIMEOUT_S = 2.0
#: From the message's return to the queue until the live worker has claimed it: fetch poll, claim, model warm.
PICKUP_S = 5.0


@pytest.fixture
def stack(redis_server: str, model_cache: Path, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(
        tmp_path,
        redis_server,
        model_cache,
        SDQ_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S),
        SDQ_LEASE_S=str(HEARTBEAT_TIMEOUT_S),
        SDQ_TORCH_THREADS="1",
        SDQ_IDLE_TIMEOUT_S="0",
    )
    yield running
    running.stop()


def test_a_killed_workers_job_is_completed_by_another_worker_within_two_heartbeat_timeouts(
    stack: Stack, tmp_path: Path
) -> None:
    doomed = stack.start_worker(SDQ_WORKER_ID="doomed")
    with stack.client() as client:
        job = client.submit("killed mid-job", width=512, height=512, steps=60, seed=3)
        wait_for(
            lambda: (r := client.get(job.id)).worker == "doomed" and r.progress is not None and r.progress.step > 0,
            timeout_s=120,
        )

        survivor = stack.start_worker(SDQ_WORKER_ID="survivor")
        wait_for(lambda: "worker survivor on" in (tmp_path / "logs" / "worker-1.log").read_text(), timeout_s=120)
        time.sleep(1)  # the survivor is idle and polling: no other traffic from here on

        doomed.send_signal(signal.SIGKILL)  # like a spot reclaim without notice, or the OOM killer
        doomed.wait()
        killed = time.monotonic()
        picked = wait_for(
            lambda: (r := client.get(job.id)).worker == "survivor" and r.attempts == 2 and r, timeout_s=120
        )
        pickup_s = time.monotonic() - killed
        assert picked.status in (JobStatus.RUNNING, JobStatus.SUCCEEDED)
        assert pickup_s <= 2 * HEARTBEAT_TIMEOUT_S + PICKUP_S, f"took {pickup_s:.1f} s to pick the job up again"

        final = client.wait(job.id, timeout_s=300)
        assert final.status is JobStatus.SUCCEEDED and final.attempts == 2 and final.worker == "survivor"
        assert len(final.outputs) == 1
        assert survivor.poll() is None
