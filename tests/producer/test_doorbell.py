"""The doorbell: an idle consumer picks a new message up at once, not at its next poll (producer/doorbell.py).

Real redis-server, real Dramatiq worker threads. Every worker here polls only every 5 s, and idles long enough
first for Dramatiq's backoff to reach multi-second sleeps, so a pick-up within 0.75 s can only come from the bell.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Worker

from producer.batches import BatchService
from producer.broker import BATCH_ACTOR, GENERATE_ACTOR, make_broker
from producer.doorbell import WakingRedisBroker
from producer.jobs import BatchRequest, JobRequest
from producer.service import JobService
from producer.store import JobStore

POLL_MS = 5000
IDLE_S = 3.0  # Dramatiq's backoff after 3 s of empty fetches: sleeps of 1.3-2.6 s, capped at POLL_MS
PROMPT_S = 0.75


class _Seen:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def record(self, payload: dict[str, Any]) -> None:
        self.at[payload["job_id"]] = time.monotonic()

    def wait_for(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.at) < count and time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.fixture
def idle_worker(redis_client: redis.Redis) -> Iterator[tuple[WakingRedisBroker, _Seen]]:
    broker = make_broker(redis_client, heartbeat_timeout_s=60)
    assert isinstance(broker, WakingRedisBroker)
    seen = _Seen()
    for name, queue in ((GENERATE_ACTOR, "q"), (BATCH_ACTOR, "qb")):
        dramatiq.actor(seen.record, broker=broker, actor_name=name, queue_name=queue)
    worker = Worker(broker, queues={"q", "qb"}, worker_threads=2, worker_timeout=POLL_MS)
    worker.start()
    time.sleep(IDLE_S)
    yield broker, seen
    broker.wake_consumers()  # so they see the stop now, not after their wait for the bell
    worker.stop(timeout=POLL_MS * 2)
    broker.close()


def _service(broker: WakingRedisBroker) -> JobService:
    return JobService(JobStore(broker.client, ttl_s=60), broker, queue="q", default_model="tiny")


def test_a_job_the_api_creates_is_picked_up_at_once_by_an_idle_worker(idle_worker: Any) -> None:
    broker, seen = idle_worker
    sent = time.monotonic()
    record = _service(broker).submit(JobRequest(prompt="a cat", width=64, height=64))  # lua/create.lua
    seen.wait_for(1, timeout_s=POLL_MS / 1000 * 2)
    assert record.id in seen.at
    assert seen.at[record.id] - sent < PROMPT_S


def test_a_batch_is_picked_up_at_once_by_an_idle_worker(idle_worker: Any) -> None:
    broker, seen = idle_worker
    batches = BatchService(_service(broker), queue="qb")
    sent = time.monotonic()
    created, _ = batches.create(BatchRequest(items=[{"prompt": f"p{i}"} for i in range(3)]))  # lua/batch.lua
    seen.wait_for(3, timeout_s=POLL_MS / 1000 * 2)
    assert set(created.job_ids) <= set(seen.at)
    assert min(seen.at[job_id] for job_id in created.job_ids) - sent < PROMPT_S


def test_dramatiq_enqueues_ring_the_bell_too(idle_worker: Any) -> None:
    """Resends and retries go through Dramatiq's own enqueue: its middleware rings. (A delayed message rings when
    its delay queue's consumer moves it to the queue, once due; that consumer itself polls.)"""
    broker, seen = idle_worker
    sent = time.monotonic()
    broker.actors[GENERATE_ACTOR].send({"job_id": "plain"})
    seen.wait_for(1, timeout_s=POLL_MS / 1000 * 2)
    assert seen.at["plain"] - sent < PROMPT_S


def test_without_a_bell_an_idle_worker_still_polls(idle_worker: Any) -> None:
    """A message pushed straight onto the list (no PUBLISH: an old producer, a lost ring) waits for the next
    poll, as with plain Dramatiq, but is not lost."""
    broker, seen = idle_worker
    message = broker.actors[GENERATE_ACTOR].message({"job_id": "quiet"})
    redis_id = "quiet-1"
    body = message.copy(options={"redis_message_id": redis_id}).encode()
    broker.client.hset(f"{broker.namespace}:q.msgs", redis_id, body)
    broker.client.rpush(f"{broker.namespace}:q", redis_id)
    sent = time.monotonic()
    seen.wait_for(1, timeout_s=POLL_MS / 1000 * 2)
    assert "quiet" in seen.at
    assert seen.at["quiet"] - sent <= POLL_MS / 1000 + 0.5


def test_a_yielding_batch_queue_waits_for_every_waiting_interactive_job(redis_client: redis.Redis) -> None:
    """The worker's batch queue yields to its interactive queue (gpu_worker/worker.py): with both queues full,
    every interactive job starts before the first batch job, as `queue_position` counts them. Without the yield,
    a freed thread took whichever message was in hand, and batch jobs ran in between."""
    broker = make_broker(redis_client, heartbeat_timeout_s=60)
    assert isinstance(broker, WakingRedisBroker)
    started: list[str] = []

    def run(payload: dict[str, Any]) -> None:
        started.append(payload["lane"])
        time.sleep(0.02)

    dramatiq.actor(run, broker=broker, actor_name=GENERATE_ACTOR, queue_name="q")
    dramatiq.actor(run, broker=broker, actor_name=BATCH_ACTOR, queue_name="qb", priority=100)
    for _ in range(30):
        broker.actors[BATCH_ACTOR].send({"lane": "batch"})
    for _ in range(30):
        broker.actors[GENERATE_ACTOR].send({"lane": "interactive"})
    broker.yield_queue("qb", to="q")
    worker = Worker(broker, queues={"q", "qb"}, worker_threads=2, worker_timeout=500)
    worker.queue_prefetch = 2  # as `sdq worker` sets it: what runs, nothing held beyond
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(started) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        broker.wake_consumers()
        worker.stop(timeout=5000)
        broker.close()
    assert len(started) == 60
    assert started[:30] == ["interactive"] * 30


def test_a_process_listens_only_to_the_queues_it_consumes(idle_worker: Any, redis_client: redis.Redis) -> None:
    """The listener subscribes to the wake channels of its own queues, not a pattern of every queue's: with one,
    each job the API created woke `sdq webhooks` (which consumes only its delivery queue), 0.1 of a core under
    bench/api.py's submit load. A queue consumed later is subscribed too, within a second."""
    broker, _ = idle_worker
    channels = {f"{broker.namespace}:{queue}.wake" for queue in ("q", "qb")}
    assert int(redis_client.execute_command("PUBSUB", "NUMPAT")) == 0
    counts = dict(redis_client.pubsub_numsub(*channels, f"{broker.namespace}:sdq-webhooks.wake"))
    assert {channel.decode(): count for channel, count in counts.items()} == {
        **dict.fromkeys(channels, 1),
        f"{broker.namespace}:sdq-webhooks.wake": 0,
    }
    broker.consume("later")
    later = f"{broker.namespace}:later.wake"
    deadline = time.monotonic() + 5
    while dict(redis_client.pubsub_numsub(later))[later.encode()] != 1:
        assert time.monotonic() < deadline, "the queue consumed later was not subscribed"
        time.sleep(0.05)


def test_a_lost_redis_is_reported_once_not_every_retry(caplog: pytest.LogCaptureFixture) -> None:
    """The listener retries every second while Redis is away; it warns when Redis goes, then once a minute (every
    retry warned before: a flood in every process's log for the length of an outage)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from producer.localstack import free_port

    # No retries inside redis-py: each of the listener's own retries fails at once.
    gone = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    broker = make_broker(gone, heartbeat_timeout_s=60)
    assert isinstance(broker, WakingRedisBroker)
    with caplog.at_level("WARNING", logger="producer.doorbell"):
        broker.consume("q")  # starts the listener
        time.sleep(4.0)  # three retries or more
        broker.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "producer.doorbell"]
    assert len(warnings) == 1 and "lost Redis" in warnings[0], warnings
