"""Idle shutdown with real worker processes: exit 0 after idling, never while a job runs; then retire (moto)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import redis

from producer import JobStatus
from tests.fake_metadata import FakeMetadata
from tests.gpu_worker.autoscaling import REGION, group, make_group, moto_server
from tests.support import Stack, start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]


_moto = pytest.fixture(name="moto_url")(moto_server)


@pytest.fixture
def stack(redis_server: str, model_cache: Path, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(tmp_path, redis_server, model_cache, SDQ_TORCH_THREADS="1")
    yield running
    running.stop()


def _exit_code(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


def test_an_idle_worker_exits_0_after_the_timeout(stack: Stack, tmp_path: Path) -> None:
    started = time.monotonic()
    worker = stack.start_worker(SDQ_IDLE_TIMEOUT_S="2")
    assert _exit_code(worker, timeout_s=120) == 0
    assert time.monotonic() - started >= 2
    log = (tmp_path / "logs" / "worker-0.log").read_text()
    assert "idle for 2 s" in log and "Traceback" not in log


def test_a_busy_worker_does_not_exit_and_exits_once_idle(stack: Stack) -> None:
    worker = stack.start_worker(SDQ_IDLE_TIMEOUT_S="2")
    with stack.client() as client:
        # A job that runs well past the idle timeout (several seconds of denoising on a CPU).
        job = client.submit("a long job", width=256, height=256, steps=60, seed=1)
        wait_for(lambda: client.get(job.id).status is JobStatus.RUNNING, timeout_s=120)
        record = client.wait(job.id, timeout_s=300)
        assert record.status is JobStatus.SUCCEEDED, record.error
        assert record.started_at is not None and record.finished_at is not None
        assert (record.finished_at - record.started_at).total_seconds() > 2  # the job outlasted the timeout
        assert worker.poll() is None  # ...and the worker did not leave while it ran
        finished = time.monotonic()
        assert _exit_code(worker, timeout_s=120) == 0
        assert time.monotonic() - finished >= 1  # it idled (about 2 s) before leaving


def test_a_job_queued_while_idling_resets_the_clock(stack: Stack) -> None:
    worker = stack.start_worker(SDQ_IDLE_TIMEOUT_S="3")
    with stack.client() as client:
        for _ in range(3):  # short jobs, each well inside the timeout after the last
            time.sleep(1)
            assert client.wait(client.submit("short", width=64, height=64, steps=1).id).status is JobStatus.SUCCEEDED
            assert worker.poll() is None
    assert _exit_code(worker, timeout_s=120) == 0


def test_an_idle_worker_retires_its_instance_from_the_auto_scaling_group(
    stack: Stack, moto_url: str, tmp_path: Path
) -> None:
    autoscaling, instances = make_group(moto_url, desired=1)
    with FakeMetadata() as imds:
        imds.state.instance_id, imds.state.region = instances[0], REGION
        worker = stack.start_worker(
            SDQ_IDLE_TIMEOUT_S="2",
            SDQ_RETIRE="aws",
            SDQ_AWS_METADATA_URL=imds.url,
            SDQ_AWS_ENDPOINT_URL=moto_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )
        assert _exit_code(worker, timeout_s=120) == 0
    after = group(autoscaling)
    assert after["DesiredCapacity"] == 0 and after["Instances"] == []
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
    state = ec2.describe_instances(InstanceIds=instances)["Reservations"][0]["Instances"][0]["State"]["Name"]
    ec2.close()
    assert state in ("shutting-down", "terminated")
    assert "retired: aws:" in (tmp_path / "logs" / "worker-0.log").read_text()
