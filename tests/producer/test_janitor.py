"""The janitor on a real Redis: expired leases requeued or failed, lost messages re-enqueued, and every change
fenced against a worker finishing at the same moment (one transition to `succeeded`, never two)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from producer.broker import make_broker
from producer.controller import Janitor
from producer.controller.janitor import message_job_ids
from producer.jobs import ErrorCode, JobRequest, JobStatus
from producer.service import JobService
from producer.store import JobStore
from tests.support import wait_for

pytestmark = pytest.mark.redis

QUEUE = "sdq-generate"
BATCH_QUEUE = "sdq-batch"


@pytest.fixture
def broker(redis_client: redis.Redis) -> RedisBroker:
    return make_broker(redis_client, heartbeat_timeout_s=60)


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, ttl_s=3600)


@pytest.fixture
def service(store: JobStore, broker: RedisBroker) -> JobService:
    return JobService(store, broker, queue=QUEUE, default_model="tiny")


def _janitor(store: JobStore, broker: RedisBroker, *, max_attempts: int = 3, grace_s: float = 0.0) -> Janitor:
    return Janitor(
        store,
        broker,
        queue=QUEUE,
        batch_queue=BATCH_QUEUE,
        max_attempts=max_attempts,
        lease_grace_s=0.0,
        lost_message_grace_s=grace_s,
    )


def _submit(service: JobService) -> str:
    return service.submit(JobRequest(prompt="a cat", width=64, height=64, steps=1)).id


def _drop_messages(client: redis.Redis) -> None:
    """What a Redis failover that lost recent writes (or a flushed queue) leaves: records without messages."""
    client.delete(f"dramatiq:{QUEUE}", f"dramatiq:{QUEUE}.msgs")


def _expire(store: JobStore, job_id: str, *, worker: str = "w1") -> int:
    claim = store.claim(job_id, worker=worker, lease_s=0.05, max_attempts=3)
    assert claim.outcome == "claimed"
    time.sleep(0.1)  # the worker went silent: its lease runs out
    return claim.attempt


def test_an_expired_lease_is_requeued_with_a_reason_and_its_message_is_not_duplicated(
    service: JobService, store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    job_id = _submit(service)
    _expire(store, job_id)
    report = _janitor(store, broker).sweep()
    assert report.requeued == [job_id] and report.reenqueued == []  # its message is still queued
    record = store.get(job_id)
    assert record.status is JobStatus.QUEUED and record.attempts == 1 and not record.worker
    assert any("lost its worker" in w for w in record.warnings)
    assert message_job_ids(redis_client, QUEUE) == {job_id} and redis_client.llen(f"dramatiq:{QUEUE}") == 1
    # the next worker's claim is a new attempt
    assert store.claim(job_id, worker="w2", lease_s=30, max_attempts=3).attempt == 2


def test_an_expired_lease_whose_message_is_gone_is_requeued_and_re_enqueued(
    service: JobService, store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    job_id = _submit(service)
    _expire(store, job_id)
    _drop_messages(redis_client)
    report = _janitor(store, broker, grace_s=3600).sweep()  # no grace for a job the janitor itself requeued
    assert report.requeued == [job_id] and report.reenqueued == [job_id]
    assert message_job_ids(redis_client, QUEUE) == {job_id}
    assert _janitor(store, broker).sweep().reenqueued == []  # and only once


def test_an_expired_lease_out_of_attempts_fails_the_job_worker_lost(
    service: JobService, store: JobStore, broker: RedisBroker
) -> None:
    job_id = _submit(service)
    _expire(store, job_id)
    report = _janitor(store, broker, max_attempts=1).sweep()
    assert report.failed == [job_id] and report.requeued == []
    record = store.get(job_id)
    assert record.status is JobStatus.FAILED and record.finished_at is not None
    assert record.error is not None and record.error.code is ErrorCode.WORKER_LOST and "w1" in record.error.message
    assert store.claim(job_id, worker="w2", lease_s=30, max_attempts=3).outcome == "skip"


def test_a_live_lease_is_left_alone(service: JobService, store: JobStore, broker: RedisBroker) -> None:
    job_id = _submit(service)
    store.claim(job_id, worker="w1", lease_s=30, max_attempts=3)
    assert _janitor(store, broker).sweep().requeued == []
    assert store.get(job_id).status is JobStatus.RUNNING
    # even called directly, the script re-checks the lease in the same atomic step
    assert store.reap(job_id, 1, grace_s=0, max_attempts=3, note="x").outcome == "held"


def test_a_worker_that_settles_first_wins_and_the_janitor_does_nothing(
    service: JobService, store: JobStore, broker: RedisBroker
) -> None:
    job_id = _submit(service)
    attempt = _expire(store, job_id)
    assert store.settle(job_id, attempt, JobStatus.SUCCEEDED, outputs=[])  # a slow but alive worker finishes
    assert store.reap(job_id, attempt, grace_s=0, max_attempts=3, note="x").outcome == "lost"
    assert _janitor(store, broker).sweep().requeued == []
    assert store.get(job_id).status is JobStatus.SUCCEEDED


def test_once_the_janitor_took_the_job_the_old_attempt_can_no_longer_settle(
    service: JobService, store: JobStore, broker: RedisBroker
) -> None:
    job_id = _submit(service)
    attempt = _expire(store, job_id)
    assert _janitor(store, broker).sweep().requeued == [job_id]
    assert not store.touch(job_id, attempt, lease_s=30).held  # the old worker learns it lost the job
    assert not store.settle(job_id, attempt, JobStatus.SUCCEEDED, outputs=[])  # and its late result is refused
    claim = store.claim(job_id, worker="w2", lease_s=30, max_attempts=3)
    assert store.settle(job_id, claim.attempt, JobStatus.SUCCEEDED, outputs=[])
    record = store.get(job_id)
    assert record.status is JobStatus.SUCCEEDED and record.attempts == 2 and record.worker == "w2"


def test_a_queued_job_whose_message_was_lost_is_re_enqueued_after_its_grace(
    service: JobService, store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    lost, kept = _submit(service), _submit(service)
    _drop_messages(redis_client)
    from producer.broker import send
    from producer.jobs import JobMessage

    send(broker, QUEUE, JobMessage(job_id=kept, request=store.get(kept).request))
    janitor = _janitor(store, broker, grace_s=0.5)

    first = janitor.sweep()  # maybe a producer is about to send it: wait
    assert first.reenqueued == [] and first.suspects == 1
    dry = _janitor(store, broker, grace_s=0.0)
    assert dry.sweep(dry_run=True).reenqueued == [lost] and message_job_ids(redis_client, QUEUE) == {kept}

    report = wait_for(lambda: janitor.sweep().reenqueued, timeout_s=10, interval_s=0.1)
    assert report == [lost]
    assert message_job_ids(redis_client, QUEUE) == {lost, kept}
    assert redis_client.llen(f"dramatiq:{QUEUE}") == 2
    assert janitor.sweep().reenqueued == []  # exactly once
    assert store.get(lost).status is JobStatus.QUEUED


def test_a_canceled_job_is_never_re_enqueued(
    service: JobService, store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    job_id = _submit(service)
    _drop_messages(redis_client)
    service.cancel(job_id)
    assert _janitor(store, broker).sweep().reenqueued == []
    assert message_job_ids(redis_client, QUEUE) == set()


def test_a_cancel_wins_over_reaping_an_expired_lease_even_with_its_message_lost(
    service: JobService, store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    job_id = _submit(service)
    _expire(store, job_id)
    assert service.cancel(job_id).cancel_requested  # flagged: the (dead) worker would stop at its next step
    _drop_messages(redis_client)
    report = _janitor(store, broker).sweep()
    assert report.canceled == [job_id] and report.requeued == [] and report.reenqueued == []
    record = store.get(job_id)
    assert record.status is JobStatus.CANCELED and record.finished_at is not None
    assert not redis_client.zscore(f"sdq:jobs:{JobStatus.QUEUED.value}", job_id)
    assert _janitor(store, broker).sweep().canceled == []  # once


def test_a_dry_run_changes_nothing(service: JobService, store: JobStore, broker: RedisBroker) -> None:
    job_id = _submit(service)
    _expire(store, job_id)
    report = _janitor(store, broker).sweep(dry_run=True)
    assert report.expired == [job_id] and report.requeued == []
    assert store.get(job_id).status is JobStatus.RUNNING


def test_batch_jobs_count_as_having_a_message_on_the_batch_queue_and_return_there(
    store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    from producer.broker import BATCH_ACTOR, send
    from producer.jobs import JobMessage, new_job_id

    job_id = new_job_id()
    request = JobRequest(prompt="item 1", width=64, height=64, steps=1).resolved("tiny")
    store.create(job_id, request, batch_id="b" * 32)  # as a batch records its jobs
    send(broker, BATCH_QUEUE, JobMessage(job_id=job_id, request=request), actor=BATCH_ACTOR)
    assert _janitor(store, broker).sweep().reenqueued == []  # its message is on the batch queue: not lost

    redis_client.delete(f"dramatiq:{BATCH_QUEUE}", f"dramatiq:{BATCH_QUEUE}.msgs")
    assert _janitor(store, broker).sweep().reenqueued == [job_id]
    assert message_job_ids(redis_client, BATCH_QUEUE) == {job_id} and message_job_ids(redis_client, QUEUE) == set()
    [body] = redis_client.hvals(f"dramatiq:{BATCH_QUEUE}.msgs")
    assert b'"actor_name":"generate_batch"' in body.replace(b" ", b"")


class _Counting(Janitor):
    """A janitor that notes how many jobs each sweep looked at."""

    looked: list[int]

    def _to_check(self, reaped: Iterable[str]) -> list[str]:
        checked = super()._to_check(reaped)
        self.looked.append(len(checked))
        return checked


def _counting(store: JobStore, broker: RedisBroker) -> _Counting:
    janitor = _Counting(
        store,
        broker,
        queue=QUEUE,
        batch_queue=BATCH_QUEUE,
        max_attempts=3,
        lease_grace_s=0.0,
        lost_message_grace_s=0.0,
        lost_message_slice=10,
        line_front=5,
    )
    janitor.looked = []
    return janitor


def test_a_lost_message_deep_in_a_long_line_is_found_by_the_walk_each_sweep_looking_at_a_slice(
    service: JobService, store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    jobs = [_submit(service) for _ in range(60)]
    deep = jobs[47]
    redis_client.hdel(f"dramatiq:{QUEUE}.msgs", deep)  # its body gone (Redis lost it), the rest intact
    janitor = _counting(store, broker)
    sweeps = [janitor.sweep().reenqueued for _ in range(6)]
    # 5 from the front and 10 from the cursor a sweep: the walk reaches place 47 on its fifth slice, once.
    assert sweeps == [[], [], [], [], [deep], []]
    assert max(janitor.looked) <= 15  # never the whole line
    assert deep in {m.decode() for m in redis_client.hkeys(f"dramatiq:{QUEUE}.msgs")} or any(
        redis_client.hget(f"sdq:job:{deep}", "rmsg") == k for k in redis_client.hkeys(f"dramatiq:{QUEUE}.msgs")
    )  # it has a message again (under the id its record notes)


def test_a_sweep_of_a_line_whose_messages_are_all_there_looks_at_no_job_and_a_loss_starts_the_walk(
    service: JobService, store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    jobs = [_submit(service) for _ in range(40)]
    janitor = _counting(store, broker)
    assert [janitor.sweep().reenqueued for _ in range(3)] == [[], [], []]
    assert janitor.looked == [0, 0, 0]  # the counts agree: nothing changed, nothing read
    redis_client.hdel(f"dramatiq:{QUEUE}.msgs", jobs[30])  # Redis lost one body deep in the line
    found = [janitor.sweep().reenqueued for _ in range(5)]
    assert [job for sweep in found for job in sweep] == [jobs[30]]  # found by the walk, once
    assert janitor.looked[-1] == 0 and max(janitor.looked) <= 15  # once found, the sweeps look at nothing again


def test_a_job_canceled_in_line_does_not_hide_another_job_s_lost_message(
    service: JobService, store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    canceled, lost, kept = _submit(service), _submit(service), _submit(service)
    service.cancel(canceled)  # its message stays queued until a worker takes it: as many messages as jobs, + 1
    redis_client.hdel(f"dramatiq:{QUEUE}.msgs", lost)  # now as many as the queued jobs: the count alone would agree
    janitor = _counting(store, broker)
    assert janitor.sweep().reenqueued == [lost]
    assert janitor.sweep().reenqueued == [] and janitor.looked[-1] == 0
    assert store.get(kept).status is JobStatus.QUEUED


def test_a_canceled_job_s_message_leaves_the_count_when_a_worker_takes_it_or_it_is_gone(
    service: JobService, store: JobStore, broker: RedisBroker, redis_client: redis.Redis
) -> None:
    taken, dropped, lost, kept = (_submit(service) for _ in range(4))
    service.cancel(taken)
    service.cancel(dropped)
    stale = "sdq:line:stale"
    assert redis_client.smembers(stale) == {taken.encode(), dropped.encode()}
    assert 0 < redis_client.ttl(stale) <= 3600  # it never outlives the records it names by more than their TTL
    assert store.claim(taken, worker="w1", lease_s=30, max_attempts=3).outcome == "skip"  # a worker took it
    assert redis_client.smembers(stale) == {dropped.encode()}
    redis_client.hdel(f"dramatiq:{QUEUE}.msgs", taken)  # and acked it
    # The other canceled job's message went without a claim (dead-lettered, say), and another job's was lost.
    redis_client.hdel(f"dramatiq:{QUEUE}.msgs", dropped, lost)
    janitor = _counting(store, broker)
    assert janitor.sweep().reenqueued == [lost]
    assert redis_client.scard(stale) == 0  # pruned: it no longer stands for a message
    assert janitor.sweep().reenqueued == [] and janitor.looked[-1] == 0  # the counts agree again
    assert store.get(kept).status is JobStatus.QUEUED
