"""Scale to zero with real processes: `sdq controller` raises an AWS Auto Scaling group (moto's server) for a job
submitted with no workers, never lowers it, and hands a `kill -9`'d worker's job back with no worker left alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from producer import JobStatus
from producer.broker import make_broker
from producer.jobs import JobRequest
from producer.service import JobService
from producer.store import JobStore
from tests.support import free_port, start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

QUEUE = "sdq-generate"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    """moto's AWS server (Auto Scaling + EC2) in this process on a free loopback port, with a GPU launch template."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto keeps its state per process, across servers: another module's group and template may still be there.
    httpx.post(f"{url}/moto-api/reset").raise_for_status()
    ec2 = boto3.client("ec2", endpoint_url=url, region_name="us-east-1", **_keys())
    ec2.create_launch_template(
        LaunchTemplateName="sdq-gpu", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"}
    )
    ec2.close()
    yield url
    while _CLIENTS:  # closed here, not collected later in another test (which would warn of unclosed sockets)
        _CLIENTS.pop().close()
    server.stop()


#: The Auto Scaling clients `_group` handed out, closed when the moto server stops.
_CLIENTS: list[Any] = []


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _group(aws: str, name: str) -> Any:
    import boto3

    client = boto3.client("autoscaling", endpoint_url=aws, region_name="us-east-1", **_keys())
    client.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": "sdq-gpu"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
    )
    _CLIENTS.append(client)
    return client


def _desired(client: Any, name: str) -> int:
    return int(
        client.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]["DesiredCapacity"]
    )


def test_a_job_at_zero_workers_raises_the_group_within_2_s_and_the_controller_never_lowers_it(
    aws: str, redis_server: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    group = _group(aws, "sdq-scale-from-zero")
    metrics_port = free_port()
    env = {
        **os.environ,
        **AWS_ENV,
        "SDQ_REDIS_URL": redis_server,
        "SDQ_DATA_DIR": str(tmp_path),
        "SDQ_PROVIDER": "aws",
        "SDQ_AWS_ASG_NAME": "sdq-scale-from-zero",
        "SDQ_AWS_ENDPOINT_URL": aws,
        "SDQ_AWS_REGION": "us-east-1",
        "SDQ_CONTROLLER_INTERVAL_S": "0.2",
        "SDQ_SCALE_COOLDOWN_S": "0",
        "SDQ_CONTROLLER_METRICS_PORT": str(metrics_port),
        "SDQ_CONTROLLER_METRICS_HOST": "127.0.0.1",
    }
    log = (tmp_path / "controller.log").open("wb")
    controller = subprocess.Popen([sys.executable, "-m", "producer.cli", "controller"], env=env, stdout=log, stderr=log)
    try:
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

        def deciding() -> bool:
            try:
                return 'action="hold"' in httpx.get(metrics_url, timeout=2).text
            except httpx.TransportError:
                return False

        wait_for(deciding, timeout_s=60)  # the controller is up and has seen the group at 0
        assert _desired(group, "sdq-scale-from-zero") == 0

        service = JobService(JobStore(client, ttl_s=3600), make_broker(client, heartbeat_timeout_s=60), queue=QUEUE,
                             default_model="tiny")  # fmt: skip
        submitted = time.monotonic()
        job = service.submit(JobRequest(prompt="wake up", width=64, height=64, steps=1))
        wait_for(lambda: _desired(group, "sdq-scale-from-zero") >= 1, timeout_s=10, interval_s=0.02)
        assert time.monotonic() - submitted < 2.0
        assert _desired(group, "sdq-scale-from-zero") == 1  # one job, one worker

        text = httpx.get(metrics_url).text
        assert f'sdq_queue_work_remaining{{queue="{QUEUE}+sdq-batch"}} 1.0' in text and 'action="raise"' in text

        # More machines than the work needs (another operator, or workers still booting): left alone.
        group.set_desired_capacity(AutoScalingGroupName="sdq-scale-from-zero", DesiredCapacity=3)
        service.cancel(job.id)
        client.delete(f"dramatiq:{QUEUE}", f"dramatiq:{QUEUE}.msgs")  # no work left at all
        observed = set()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            observed.add(_desired(group, "sdq-scale-from-zero"))
            time.sleep(0.1)
        assert observed == {3}  # never lowered: workers retire themselves when idle
        assert controller.poll() is None
    finally:
        controller.send_signal(signal.SIGTERM)
        controller.wait(timeout=30)
        log.close()
    assert controller.returncode == 0


def test_a_killed_workers_job_comes_back_with_no_live_worker_and_completes_exactly_once(
    redis_server: str, model_cache: Path, tmp_path: Path
) -> None:
    redis.Redis.from_url(redis_server).flushdb()
    timeout_s = 2.0
    stack = start_stack(
        tmp_path, redis_server, model_cache, SDQ_HEARTBEAT_TIMEOUT_S=str(timeout_s), SDQ_LEASE_S=str(timeout_s)
    )
    client_redis = redis.Redis.from_url(redis_server)
    try:
        stack.start_controller(SDQ_CONTROLLER_INTERVAL_S="0.25", SDQ_JANITOR_INTERVAL_S="0.25", SDQ_LEASE_GRACE_S="0")
        with stack.client() as client:
            job = client.submit("stranded", width=256, height=256, steps=30)
            worker = stack.start_worker()
            wait_for(lambda: (r := client.get(job.id)).status is JobStatus.RUNNING and r.progress is not None,
                     timeout_s=120)  # fmt: skip
            worker.send_signal(signal.SIGKILL)  # a spot reclaim without notice, or the OOM killer
            worker.wait()
            killed = time.monotonic()

            # No worker is alive: only the controller can hand the job back.
            def back() -> bool:
                record = client.get(job.id)
                return record.status is JobStatus.QUEUED and client_redis.llen(f"dramatiq:{QUEUE}") == 1

            wait_for(back, timeout_s=30, interval_s=0.05)
            assert time.monotonic() - killed < 2 * timeout_s + 1.0  # within 2 × heartbeat timeout (+ tick slack)
            record = client.get(job.id)
            assert any("lost its worker" in w for w in record.warnings) and record.attempts == 1

            stack.start_worker()
            done = client.wait(job.id, timeout_s=300)
            assert done.status is JobStatus.SUCCEEDED and done.attempts == 2, done.error
            assert len(done.outputs) == 1
            # One set of objects: the second attempt's, under its own keys (an attempt whose worker was only stalled
            # could still upload; it never writes over the winner's), and nothing else under the job.
            root = tmp_path / "data" / "objects"
            objects = [p for p in (root / "jobs" / job.id).rglob("*") if p.is_file() and not p.name.startswith(".")]
            assert [p.relative_to(root).as_posix() for p in objects] == [o.key for o in done.outputs]
            assert [o.key for o in done.outputs] == [f"jobs/{job.id}/attempt-2/0.png"]
            assert client_redis.llen(f"dramatiq:{QUEUE}") == 0
    finally:
        stack.stop()
