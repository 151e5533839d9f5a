"""The controller on a real Redis: work remaining from Dramatiq's keys, maintenance with zero live workers,
the scaler's arithmetic and its refusal to lower capacity, and `sdq controller --dry-run` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from producer.broker import make_broker
from producer.controller import Scaler, ScalingPolicy, read_work, run_maintenance
from producer.controller.providers import NoProvider
from producer.controller.work import QueueWork
from producer.jobs import JobRequest
from producer.service import JobService
from producer.store import JobStore
from tests.support import wait_for

pytestmark = pytest.mark.redis

QUEUE = "sdq-generate"


@pytest.fixture
def broker(redis_client: redis.Redis) -> RedisBroker:
    return make_broker(redis_client, heartbeat_timeout_s=60)


@pytest.fixture
def service(redis_client: redis.Redis, broker: RedisBroker) -> JobService:
    return JobService(JobStore(redis_client, ttl_s=3600), broker, queue=QUEUE, default_model="tiny")


def _submit(service: JobService, count: int) -> list[str]:
    return [service.submit(JobRequest(prompt=f"job {n}", width=64, height=64, steps=1)).id for n in range(count)]


def _hold(broker: RedisBroker, count: int) -> object:
    """A real Dramatiq consumer (a worker's fetch path) holding `count` messages unacknowledged."""
    consumer = broker.consume(QUEUE, prefetch=count, timeout=50)
    held = []
    deadline = time.monotonic() + 10
    while len(held) < count and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            held.append(message)
    assert len(held) == count
    return consumer


HOLDER = textwrap.dedent(
    """
    import sys, time, redis
    from producer.broker import make_broker
    broker = make_broker(redis.Redis.from_url(sys.argv[1]), heartbeat_timeout_s=float(sys.argv[3]))
    consumer = broker.consume(sys.argv[2], prefetch=int(sys.argv[4]), timeout=50)
    held = 0
    while held < int(sys.argv[4]):
        held += next(consumer) is not None
    print("held", flush=True)
    time.sleep(3600)
    """
)


@pytest.fixture
def dead_holder(redis_server: str) -> Iterator[subprocess.Popen[str]]:
    """A separate process that fetches messages like a worker, then is killed with SIGKILL (like a spot reclaim)."""
    processes: list[subprocess.Popen[str]] = []

    def start(count: int, heartbeat_timeout_s: float) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, redis_server, QUEUE, str(heartbeat_timeout_s), str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        return process

    yield start  # type: ignore[misc]
    for process in processes:
        if process.poll() is None:
            process.kill()


def test_work_tells_live_workers_from_dead_ones(
    service: JobService, broker: RedisBroker, redis_client: redis.Redis, dead_holder: object
) -> None:
    _submit(service, 6)
    dead_holder(2, 1.0)  # type: ignore[operator]
    held = _hold(broker, 1)  # a live worker running one job

    fresh = read_work(redis_client, QUEUE, heartbeat_timeout_s=1.0)  # the killed one has not been silent long yet
    assert (fresh.pending, fresh.in_flight, fresh.dead_held, fresh.live_workers) == (3, 3, 0, 2)

    time.sleep(1.3)
    broker.do_qsize(QUEUE)  # the live worker beats (every Dramatiq command does); the killed one cannot
    later = read_work(redis_client, QUEUE, heartbeat_timeout_s=1.0)
    assert (later.pending, later.in_flight, later.dead_held) == (3, 1, 2)
    assert (later.live_workers, later.dead_workers, later.work_remaining) == (1, 1, 6)
    assert held is not None


def test_work_remaining_sums_every_place_a_message_can_be(
    service: JobService, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    _submit(service, 5)
    held = _hold(broker, 2)  # fetched by a live worker: LLEN alone would miss these
    from producer.broker import send
    from producer.jobs import JobMessage

    request = JobRequest(prompt="retry later", width=64, height=64, steps=1).resolved("tiny")
    send(broker, QUEUE, JobMessage(job_id="0" * 32, request=request), delay_ms=60_000)

    work = read_work(redis_client, QUEUE, heartbeat_timeout_s=60)
    assert redis_client.llen(f"dramatiq:{QUEUE}") == 3
    assert (work.pending, work.delayed, work.in_flight, work.dead_held) == (3, 1, 2, 0)
    assert work.work_remaining == 6 and work.live_workers == 1
    assert "in_flight=2" in work.describe() and "work=6" in work.describe()
    assert held is not None


def test_maintenance_returns_a_dead_workers_messages_with_no_live_worker(
    service: JobService, redis_client: redis.Redis, dead_holder: object
) -> None:
    ids = _submit(service, 3)
    dead_holder(2, 1.0)  # type: ignore[operator]
    assert redis_client.llen(f"dramatiq:{QUEUE}") == 1
    controller_broker = make_broker(redis_client, heartbeat_timeout_s=1.0)

    run_maintenance(controller_broker, [QUEUE])  # heartbeat still fresh: nothing moves
    assert redis_client.llen(f"dramatiq:{QUEUE}") == 1

    started = time.monotonic()

    def returned() -> bool:
        run_maintenance(controller_broker, [QUEUE])
        return redis_client.llen(f"dramatiq:{QUEUE}") == 3

    wait_for(returned, timeout_s=10, interval_s=0.25)
    assert time.monotonic() - started < 2 * 1.0 + 1  # within 2 × heartbeat timeout (plus this poll's slack)
    work = read_work(redis_client, QUEUE, heartbeat_timeout_s=1.0)
    assert (work.pending, work.in_flight, work.dead_held, work.dead_workers) == (3, 0, 0, 0)
    ids_in_queue = {m.decode() for m in redis_client.lrange(f"dramatiq:{QUEUE}", 0, -1)}
    assert len(ids_in_queue) == 3 and len(ids) == 3


@pytest.mark.parametrize(
    ("work", "policy", "desired"),
    [
        (0, ScalingPolicy(0, 10, 1), 0),
        (0, ScalingPolicy(2, 10, 1), 2),
        (1, ScalingPolicy(0, 10, 1), 1),
        (7, ScalingPolicy(0, 10, 4), 2),
        (8, ScalingPolicy(0, 10, 4), 2),
        (9, ScalingPolicy(0, 10, 4), 3),
        (500, ScalingPolicy(0, 10, 1), 10),
    ],
)
def test_desired_workers_is_ceil_of_work_over_concurrency_within_bounds(
    work: int, policy: ScalingPolicy, desired: int
) -> None:
    assert policy.desired(work) == desired


class _Group:
    """An in-memory group implementing the provider protocol (the real clouds are tested in test_providers and
    tests/integration/test_scale_from_zero.py); records every change so the test can see it never shrinks."""

    name = "test"

    def __init__(self, size: int, maximum: int = 100) -> None:
        self.size, self.maximum, self.changes = size, maximum, []

    def capacity(self) -> int | None:
        return self.size

    def raise_to(self, count: int) -> int | None:
        target = min(count, self.maximum)
        if target > self.size:
            self.size = target
            self.changes.append(target)
        return self.size


def _work(n: int) -> QueueWork:
    return QueueWork(QUEUE, pending=n, delayed=0, in_flight=0, dead_held=0, live_workers=0, dead_workers=0)


def test_the_scaler_raises_never_lowers_and_honours_its_cooldown() -> None:
    now = [0.0]
    group = _Group(0, maximum=5)
    scaler = Scaler(group, ScalingPolicy(0, 10, 1), cooldown_s=10, refresh_s=30, clock=lambda: now[0])

    assert scaler.decide(_work(2)).action == "raise" and group.size == 2
    now[0] = 1
    decision = scaler.decide(_work(4))
    assert decision.action == "cooldown" and group.size == 2
    now[0] = 11
    decision = scaler.decide(_work(9))
    assert (decision.action, decision.capacity, decision.target, group.size) == ("raise", 2, 5, 5)  # max 5
    for n in (0, 1, 3):
        now[0] += 20
        assert scaler.decide(_work(n)).action == "hold"
    assert group.changes == [2, 5]  # only raises, ever

    dry = Scaler(_Group(1), ScalingPolicy(0, 10, 1), cooldown_s=0, refresh_s=30)
    decision = dry.decide(_work(3), dry_run=True)
    assert decision.action == "would-raise" and dry.provider.size == 1  # type: ignore[attr-defined]


def test_without_a_provider_decisions_are_only_reported() -> None:
    decision = Scaler(NoProvider("kubernetes"), ScalingPolicy(0, 10, 2), cooldown_s=0, refresh_s=1).decide(_work(3))
    assert (decision.action, decision.desired, decision.capacity) == ("report", 2, None)


def test_dry_run_reports_in_flight_jobs_in_its_work_count(
    service: JobService, broker: RedisBroker, redis_server: str, tmp_path: Path
) -> None:
    ids = _submit(service, 4)
    held = _hold(broker, 1)  # one job running on a (live) worker
    env = {
        **os.environ,
        "SDQ_REDIS_URL": redis_server,
        "SDQ_DATA_DIR": str(tmp_path),
        "SDQ_CONTROLLER_METRICS_PORT": "",
        "SDQ_WORKER_CONCURRENCY": "2",
    }
    result = subprocess.run(
        [sys.executable, "-m", "producer.cli", "controller", "--dry-run", "--ticks", "1", "--log-level", "warning"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("queue=")]
    assert "work=4 " in line and "pending=3" in line and "in_flight=1" in line, line
    assert "desired=2" in line and "action=report" in line, line
    # a dry run changes nothing
    assert redis.Redis.from_url(redis_server).llen(f"dramatiq:{QUEUE}") == 3 and len(ids) == 4 and held


def test_work_counts_the_batch_queue_with_the_job_queue(
    service: JobService, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    from producer.broker import BATCH_ACTOR, send
    from producer.jobs import JobMessage

    _submit(service, 2)
    request = JobRequest(prompt="batch item", width=64, height=64, steps=1).resolved("tiny")
    for n in range(3):
        send(broker, "sdq-batch", JobMessage(job_id=f"{n:032x}", request=request), actor=BATCH_ACTOR)
    work = read_work(redis_client, [QUEUE, "sdq-batch"], heartbeat_timeout_s=60)
    assert (work.queue, work.pending, work.work_remaining) == (f"{QUEUE}+sdq-batch", 5, 5)
