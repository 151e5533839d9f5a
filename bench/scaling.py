"""Scale to zero and back, and the jobs that must survive it: real processes, one run, one JSON line.

    python -m bench.scaling [--reps 5] [--heartbeat-timeout-s 2] [--size 256] [--steps 30] [--no-spot]

On the embedded default (embedded Redis, `sdq api`, `sdq controller`, `sdq worker`s, local storage, the tiny
model) and moto's AWS server:

* `zero_to_capacity_request_s`: a job submitted through the API with no worker and the Auto Scaling group at 0 →
  the controller has raised the group's desired capacity (median of `--reps`). Baseline, same run: one bare
  `SetDesiredCapacity` call from this process (`capacity_api_call_s`).
* `stranded_recovery_s`: `kill -9` of the worker running a job → another (idle, ready) worker has completed it, with
  the controller running; `stranded_pickup_s`: → the other worker has claimed it. Baselines, same run: the same job
  uninterrupted (`uninterrupted_job_s`) and the heartbeat timeout: the pickup must come within 2 × the timeout, the
  completion within that plus the job's own run time (`stranded_bound_s`).
* `notice_to_requeue_s` / `steps_lost`: one AWS spot notice, from `bench.spot.run_spot_interruption` (null when
  that module is missing).
* `jobs_lost` / `duplicate_effects` over every job meant to run: jobs not `succeeded`; transitions to `succeeded`
  beyond one per job (counted from Redis MONITOR, which shows the commands the Lua scripts run) plus output objects
  beyond the images asked for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import redis

from producer import Client, JobRecord, JobRequest, JobStatus
from producer.embedded import EmbeddedRedis
from producer.localstack import LocalStack, free_port

log = logging.getLogger("bench.scaling")
T = TypeVar("T")
QUEUE = "sdq-generate"
GROUP = "sdq-gpu"
_SUCCEEDED = re.compile(r"HSET sdq:job:([0-9a-f]{32}) status succeeded\b", re.IGNORECASE)


class TransitionCounter:
    """Counts transitions of each job to `succeeded`, as Redis executes them (MONITOR), in a thread."""

    def __init__(self, url: str) -> None:
        # No read timeout: a quiet minute must not drop the connection (and the transitions made while reconnecting).
        self.client = redis.Redis.from_url(url, socket_timeout=24 * 3600)
        self.counts: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._ready = threading.Event()
        self._monitor: Any = None
        self._stopping = False

    def start(self) -> TransitionCounter:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        while not self._stopping:
            try:
                with self.client.monitor() as monitor:
                    self._monitor = monitor
                    self._ready.set()
                    for event in monitor.listen():
                        match = _SUCCEEDED.search(event.get("command", "").replace('"', "").replace("'", ""))
                        if match:
                            self.counts[match.group(1)] += 1
            except Exception as exc:  # a line the parser chokes on, or the connection closed by stop()
                if not self._stopping:
                    log.warning("monitor: %r; reconnecting", exc)

    def stop(self) -> None:
        """Close the monitor connection (the embedded Redis stops only once no client is connected)."""
        self._stopping = True
        if self._monitor is not None:
            self._monitor.connection.disconnect()
        self._thread.join(timeout=5)
        self.client.close()


def _poll(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.02) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval_s)


@contextmanager
def moto_autoscaling() -> Iterator[tuple[str, Any]]:
    """moto's server in this process with an empty GPU Auto Scaling group (min 0, max 10); yields (url, client)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    boto3.client("ec2", endpoint_url=url, **keys).create_launch_template(
        LaunchTemplateName=GROUP, LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"}
    )
    client = boto3.client("autoscaling", endpoint_url=url, **keys)
    client.create_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        LaunchTemplate={"LaunchTemplateName": GROUP},
        MinSize=0,
        MaxSize=10,
        DesiredCapacity=0,
        AvailabilityZones=["us-east-1a"],
    )
    try:
        yield url, client
    finally:
        server.stop()


def _desired(asg: Any) -> int:
    return int(
        asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]["DesiredCapacity"]
    )


def zero_to_capacity(stack: LocalStack, client: Client, rdb: redis.Redis, reps: int) -> dict[str, float]:
    """Submit at zero workers, time until the group's desired capacity is raised; `reps` times."""
    with moto_autoscaling() as (url, asg):
        started = time.perf_counter()
        asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=0, HonorCooldown=False)
        api_call_s = time.perf_counter() - started
        port = free_port()
        aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "SDQ_AWS_REGION": "us-east-1"}
        controller = stack.start_controller(
            SDQ_PROVIDER="aws",
            SDQ_AWS_ASG_NAME=GROUP,
            SDQ_AWS_ENDPOINT_URL=url,
            SDQ_CONTROLLER_INTERVAL_S="0.1",
            SDQ_SCALE_COOLDOWN_S="0",
            SDQ_CAPACITY_REFRESH_S="0.5",
            SDQ_CONTROLLER_METRICS_PORT=str(port),
            SDQ_CONTROLLER_METRICS_HOST="127.0.0.1",
            **aws,
        )
        _poll(lambda: _metric_seen(port, 'action="hold"'), 60, "the controller's first decision", 0.2)
        samples = []
        for _ in range(reps):
            submitted = time.perf_counter()
            job = client.submit(JobRequest(prompt="wake the fleet", width=64, height=64, steps=1))
            _poll(lambda: _desired(asg) >= 1, 30, "the group to be raised", 0.005)
            samples.append(time.perf_counter() - submitted)
            # Reset: this job is not meant to run; workers would retire and lower the group themselves.
            client.cancel(job.id)
            rdb.delete(f"dramatiq:{QUEUE}", f"dramatiq:{QUEUE}.msgs")
            time.sleep(0.3)  # a tick sees no work
            asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=0, HonorCooldown=False)
            time.sleep(0.7)  # the controller re-reads the group at 0
        controller.terminate()
        controller.wait(timeout=30)
    return {
        "zero_to_capacity_request_s": statistics.median(samples),
        "zero_to_capacity_max_s": max(samples),
        "capacity_api_call_s": api_call_s,
    }


def _metric_seen(port: int, text: str) -> bool:
    import httpx

    try:
        return text in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return False


def _ready(stack: LocalStack, index: int) -> bool:
    path = stack.logs / f"worker-{index}.log"
    return path.exists() and " on cpu, queue " in path.read_text(errors="replace")


def stranded_recovery(stack: LocalStack, client: Client, request: JobRequest) -> tuple[dict[str, float], list[str]]:
    """Two ready workers; the one that takes the job is killed with `kill -9` mid-run, the other completes it."""
    first = len(stack.workers)
    workers = {
        name: stack.start_worker(SDQ_PRELOAD_MODELS="tiny", SDQ_WORKER_ID=name) for name in ("bench-a", "bench-b")
    }
    _poll(lambda: _ready(stack, first) and _ready(stack, first + 1), 300, "both workers", 0.2)
    warm = [client.submit(request.model_copy(update={"steps": 1})) for _ in workers]  # lazy initialisation
    for job in warm:
        client.wait(job.id, timeout_s=300)
    baseline = client.wait(client.submit(request).id, timeout_s=300, poll_interval_s=0.02)
    assert baseline.status is JobStatus.SUCCEEDED, baseline.error
    assert baseline.started_at and baseline.finished_at
    uninterrupted_s = (baseline.finished_at - baseline.started_at).total_seconds()

    job = client.submit(request)
    running = _poll(
        lambda: (r := client.get(job.id)).progress is not None and r.progress.step >= 1 and r, 300, "the job to run"
    )
    victim = workers[str(running.worker)]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = time.monotonic()
    picked = _poll(lambda: (r := client.get(job.id)).attempts >= 2 and r, 300, "another worker to take the job")
    picked_s = time.monotonic() - killed
    final = client.wait(job.id, timeout_s=300, poll_interval_s=0.02)
    recovery_s = time.monotonic() - killed
    assert final.status is JobStatus.SUCCEEDED, final.error
    assert final.worker != running.worker
    log.info(
        "stranded job %s: taken by %s after %.2f s, done after %.2f s", job.id, picked.worker, picked_s, recovery_s
    )
    figures = {"stranded_recovery_s": recovery_s, "stranded_pickup_s": picked_s, "uninterrupted_job_s": uninterrupted_s}
    return figures, [*(w.id for w in warm), baseline.id, job.id]


def spot(stack: LocalStack, client: Client, request: JobRequest) -> tuple[dict[str, Any], list[str]]:
    """One AWS spot notice through bench.spot (null figures when that module is not there)."""
    try:
        from bench.spot import FakeMetadata, run_spot_interruption
    except ImportError as exc:
        log.warning("bench.spot unavailable (%s): notice_to_requeue_s and steps_lost left null", exc)
        return {"notice_to_requeue_s": None, "steps_lost": None}, []
    for process in stack.workers:  # the spot run starts its own workers: none of ours may take its job
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=120)
    with FakeMetadata() as fake:
        run = run_spot_interruption(stack, client, fake, "aws", request.model_copy(update={"steps": 60}))
    return {"notice_to_requeue_s": run.notice_to_requeue_s, "steps_lost": run.steps_lost}, [run.job_id]


def audit(records: list[JobRecord], transitions: Counter[str], objects: Path) -> dict[str, int]:
    """Jobs lost, and effects beyond once per job."""
    lost = sum(1 for r in records if r.status is not JobStatus.SUCCEEDED)
    extra_transitions = sum(max(0, transitions[r.id] - 1) for r in records)
    extra_objects = 0
    for record in records:
        folder = objects / "jobs" / record.id
        stored = [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []
        extra_objects += max(0, len(stored) - record.request.num_images)
    return {
        "jobs_lost": lost,
        "duplicate_effects": extra_transitions + extra_objects,
        "succeeded_transitions_seen": sum(transitions[r.id] for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--heartbeat-timeout-s", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--no-spot", action="store_true", help="skip the spot notice part")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("werkzeug", "httpx", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    request = JobRequest(prompt="a bench", width=args.size, height=args.size, steps=args.steps, seed=3)
    figures: dict[str, Any] = {"bench": "scaling", "heartbeat_timeout_s": args.heartbeat_timeout_s}
    with tempfile.TemporaryDirectory(prefix="sdq-bench-") as tmp:
        root = Path(tmp)
        from gpu_worker.tiny import build_tiny_pipeline

        build_tiny_pipeline(root / "models" / "tiny")
        env = {**os.environ, "SDQ_DATA_DIR": str(root / "data"), "SDQ_MODEL_CACHE_DIR": str(root / "models")}
        env |= {"HF_HUB_OFFLINE": "1", "SDQ_TORCH_THREADS": str(args.torch_threads), "SDQ_IDLE_TIMEOUT_S": "0"}
        env |= {"SDQ_HEARTBEAT_TIMEOUT_S": str(args.heartbeat_timeout_s), "SDQ_LEASE_S": str(args.heartbeat_timeout_s)}
        env.pop("SDQ_REDIS_URL", None)
        env.pop("SDQ_STORAGE_URL", None)
        with EmbeddedRedis(root / "data") as embedded:
            url = embedded.start()
            rdb = redis.Redis.from_url(url)
            transitions = TransitionCounter(url).start()
            stack = LocalStack(env, root / "data" / "logs", log_level="info").start(webhooks=False)
            try:
                with Client(stack.api_url) as client:
                    figures |= zero_to_capacity(stack, client, rdb, args.reps)
                    stack.start_controller(
                        SDQ_CONTROLLER_INTERVAL_S="0.25", SDQ_JANITOR_INTERVAL_S="0.25", SDQ_LEASE_GRACE_S="0"
                    )
                    stranded, ran = stranded_recovery(stack, client, request)
                    figures |= stranded
                    if args.no_spot:
                        figures |= {"notice_to_requeue_s": None, "steps_lost": None}
                    else:
                        spot_figures, spot_ran = spot(stack, client, request)
                        figures |= spot_figures
                        ran += spot_ran
                    records = [client.get(job_id) for job_id in ran]
                    time.sleep(0.5)  # the monitor thread has seen the last transitions
                    figures |= audit(records, transitions.counts, root / "data" / "objects")
            finally:
                stack.stop()
                transitions.stop()
                rdb.close()
    timeout_s = args.heartbeat_timeout_s
    figures["stranded_bound_s"] = 2 * timeout_s + figures["uninterrupted_job_s"]
    figures["stranded_recovery_vs_bound"] = figures["stranded_recovery_s"] / figures["stranded_bound_s"]
    # The job's return alone, against the 2 × heartbeat timeout it must meet.
    figures["stranded_pickup_vs_2x_heartbeat"] = figures["stranded_pickup_s"] / (2 * timeout_s)
    figures["zero_to_capacity_vs_api_call"] = figures["zero_to_capacity_request_s"] / figures["capacity_api_call_s"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
