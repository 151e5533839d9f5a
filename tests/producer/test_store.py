"""Job records in a real Redis: atomic, fenced transitions."""

from __future__ import annotations

import time

import pytest
import redis

from producer import keys
from producer.errors import JobNotFoundError
from producer.jobs import JobRequest, JobStatus, new_job_id
from producer.store import JobStore

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, ttl_s=3600)


def _job(store: JobStore) -> str:
    job_id = new_job_id()
    store.create(job_id, JobRequest(prompt="a cat").resolved("tiny"))
    return job_id


def test_claim_touch_settle(store: JobStore) -> None:
    job_id = _job(store)
    claim = store.claim(job_id, worker="w1", lease_s=30, max_attempts=3)
    assert (claim.outcome, claim.attempt) == ("claimed", 1)
    record = store.get(job_id)
    assert record.status is JobStatus.RUNNING and record.worker == "w1" and record.attempts == 1
    assert store.touch(job_id, 1, lease_s=30).held
    assert store.settle(job_id, 1, JobStatus.SUCCEEDED, outputs=[])
    record = store.get(job_id)
    assert record.status is JobStatus.SUCCEEDED and record.finished_at is not None
    assert 0 < store.client.ttl(keys.job(job_id)) <= 3600
    assert store.claim(job_id, worker="w2", lease_s=30, max_attempts=3).outcome == "skip"


def test_a_live_lease_keeps_a_second_delivery_out(store: JobStore) -> None:
    job_id = _job(store)
    store.claim(job_id, worker="w1", lease_s=30, max_attempts=3)
    busy = store.claim(job_id, worker="w2", lease_s=30, max_attempts=3)
    assert busy.outcome == "busy" and 25 < busy.retry_after_s <= 30


def test_an_expired_lease_is_taken_over_and_the_old_attempt_is_fenced(store: JobStore) -> None:
    job_id = _job(store)
    store.claim(job_id, worker="w1", lease_s=0.05, max_attempts=3)
    time.sleep(0.1)
    claim = store.claim(job_id, worker="w2", lease_s=30, max_attempts=3)
    assert (claim.outcome, claim.attempt) == ("claimed", 2)
    assert not store.touch(job_id, 1, lease_s=30).held
    assert not store.settle(job_id, 1, JobStatus.SUCCEEDED)  # the stale attempt cannot write its result
    assert store.settle(job_id, 2, JobStatus.SUCCEEDED)


def test_attempts_are_capped(store: JobStore) -> None:
    job_id = _job(store)
    for attempt in (1, 2, 3):
        assert store.claim(job_id, worker=f"w{attempt}", lease_s=0.01, max_attempts=3).attempt == attempt
        time.sleep(0.02)
    assert store.claim(job_id, worker="w4", lease_s=30, max_attempts=3).outcome == "skip"
    record = store.get(job_id)
    assert record.status is JobStatus.FAILED and record.attempts == 3
    assert record.error is not None and record.error.code.value == "worker_lost" and "w3" in record.error.message


def test_cancel_queued_and_running(store: JobStore) -> None:
    queued = _job(store)
    assert store.cancel(queued) is JobStatus.CANCELED
    assert store.claim(queued, worker="w", lease_s=30, max_attempts=3).outcome == "skip"
    running = _job(store)
    store.claim(running, worker="w", lease_s=30, max_attempts=3)
    assert store.cancel(running) is JobStatus.RUNNING
    assert store.touch(running, 1, lease_s=30).cancel_requested
    assert store.get(running).cancel_requested
    with pytest.raises(JobNotFoundError):
        store.cancel(new_job_id())


def test_touch_many_renews_several_leases_in_one_call_each_with_its_own_outcome(store: JobStore) -> None:
    from producer.jobs import Progress

    held, canceled, fenced = _job(store), _job(store), _job(store)
    for job_id in (held, canceled, fenced):
        store.claim(job_id, worker="w", lease_s=30, max_attempts=3)
    store.cancel(canceled)
    touches = store.touch_many(
        [
            (held, 1, 30, Progress(step=3, total=20)),
            (canceled, 1, 30, None),
            (fenced, 2, 30, Progress(step=5, total=20)),  # not this job's attempt
        ]
    )
    assert [(t.held, t.cancel_requested) for t in touches] == [(True, False), (True, True), (False, False)]
    assert store.get(held).progress == Progress(step=3, total=20)
    assert store.get(fenced).progress is None


def test_handing_back_for_retry_requeues(store: JobStore) -> None:
    job_id = _job(store)
    store.claim(job_id, worker="w", lease_s=30, max_attempts=3)
    assert store.settle(job_id, 1, JobStatus.QUEUED)
    assert store.get(job_id).status is JobStatus.QUEUED
    assert store.claim(job_id, worker="w", lease_s=30, max_attempts=3).attempt == 2


def test_listing_pages_and_filters(store: JobStore) -> None:
    ids = [_job(store) for _ in range(5)]
    store.claim(ids[0], worker="w", lease_s=30, max_attempts=3)
    first = store.list(limit=2)
    assert [j.id for j in first.jobs] == ids[::-1][:2] and first.next_cursor
    second = store.list(limit=2, cursor=first.next_cursor)
    third = store.list(limit=2, cursor=second.next_cursor)
    assert [j.id for j in second.jobs + third.jobs] == ids[::-1][2:] and third.next_cursor is None
    assert [j.id for j in store.list(status=JobStatus.RUNNING).jobs] == [ids[0]]
    assert len(store.list(status=JobStatus.QUEUED).jobs) == 4
    store.client.delete(keys.job(ids[1]))  # an expired record disappears from listings
    assert ids[1] not in [j.id for j in store.list().jobs]


def test_outcomes_are_typed_and_a_fenced_off_settle_is_falsy(store: JobStore) -> None:
    from producer.outcomes import ClaimOutcome, ReapOutcome, SettleOutcome, TouchOutcome

    job_id = _job(store)
    claim = store.claim(job_id, worker="w1", lease_s=30, max_attempts=3)
    assert claim.outcome is ClaimOutcome.CLAIMED
    assert store.claim(job_id, worker="w2", lease_s=30, max_attempts=3).outcome is ClaimOutcome.BUSY
    assert store.touch(job_id, 1, lease_s=30).outcome is TouchOutcome.HELD
    store.cancel(job_id)  # running: flagged, it stops at its next step
    assert store.touch(job_id, 1, lease_s=30).outcome is TouchOutcome.CANCEL_REQUESTED
    assert store.reap(job_id, 1, grace_s=0, max_attempts=3, note="x").outcome is ReapOutcome.HELD
    assert store.settle(job_id, 2, JobStatus.SUCCEEDED, outputs=[]) is SettleOutcome.LOST
    assert not SettleOutcome.LOST and SettleOutcome.SETTLED
    assert store.settle(job_id, 1, JobStatus.CANCELED) is SettleOutcome.SETTLED
    assert store.touch(job_id, 1, lease_s=30).outcome is TouchOutcome.LOST
    assert store.reap(job_id, 1, grace_s=0, max_attempts=3, note="x").outcome is ReapOutcome.LOST
