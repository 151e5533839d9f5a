"""Notice pollers against the local fake metadata server (real HTTP), and the finish-or-checkpoint rule."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import torch

from gpu_worker.checkpoint import Snapshot
from gpu_worker.errors import JobInterruptedError
from gpu_worker.handoff import Handoff, StepClock
from gpu_worker.notices import AwsNotices, AzureNotices, GcpNotices, Interruption, Notice
from producer.jobs import JobMessage, JobRequest, JobStatus, new_job_id
from producer.store import JobStore
from storage import LocalStore, ObjectNotFoundError
from tests.fake_metadata import FakeMetadata


@pytest.fixture
def fake() -> Iterator[FakeMetadata]:
    with FakeMetadata() as server:
        yield server


def test_aws_reads_the_spot_instance_action_through_imdsv2(fake: FakeMetadata) -> None:
    source = AwsNotices(fake.url)
    assert source.poll() is None
    # the fake enforces IMDSv2 like EC2 does: no session token, no answer
    assert httpx.get(f"{fake.url}/latest/meta-data/spot/instance-action").status_code == 401

    fake.aws_rebalance()
    rebalance = source.poll()
    assert rebalance is not None and rebalance.kind == "rebalance" and rebalance.deadline is None

    fake.aws_spot(in_s=90)
    notice = source.poll()
    assert notice is not None and notice.kind == "terminate" and "terminate" in notice.detail
    assert notice.deadline is not None and 85 <= notice.deadline - time.time() <= 91
    source.close()


def test_gcp_sees_preemption_while_waiting_for_a_change(fake: FakeMetadata) -> None:
    source = GcpNotices(fake.url, notice_s=30, wait_s=10)
    assert source.poll() is None  # first read: FALSE, and an ETag to wait on
    threading.Timer(0.3, fake.gcp_preempt).start()
    started = time.monotonic()
    notice = source.poll()  # held by the server until the value changes
    assert notice is not None and notice.kind == "terminate"
    assert time.monotonic() - started < 5  # woke on the change, not at the 10 s timeout
    assert notice.deadline is not None and 25 <= notice.deadline - time.time() <= 30
    source.close()


def test_gcp_needs_the_metadata_flavor_header(fake: FakeMetadata) -> None:
    assert httpx.get(f"{fake.url}/computeMetadata/v1/instance/preempted").status_code == 403


def test_azure_takes_its_own_preempt_event_and_acknowledges_it(fake: FakeMetadata) -> None:
    source = AzureNotices(fake.url)
    assert source.poll() is None
    fake.state.azure_events.append(
        {"EventId": "other", "EventType": "Preempt", "Resources": ["someone-else_3"], "NotBefore": ""}
    )
    assert source.poll() is None  # another VM's eviction
    event_id = fake.azure_preempt(in_s=40)
    notice = source.poll()
    assert notice is not None and notice.event_id == event_id and notice.kind == "terminate"
    assert notice.deadline is not None and 35 <= notice.deadline - time.time() <= 41
    source.acknowledge(notice)
    assert fake.state.acknowledged == [event_id]
    source.close()


def test_the_first_terminate_notice_wins() -> None:
    interruption = Interruption()
    assert not interruption.is_set() and interruption.seconds_left() is None
    interruption.set(Notice("aws", "rebalance", None))
    assert interruption.is_set() and interruption.seconds_left() is None
    interruption.set(Notice("aws", "terminate", time.time() + 60))
    later = Notice("aws", "terminate", time.time() + 5)
    interruption.set(later)
    left = interruption.seconds_left()
    assert left is not None and 55 < left <= 60


def _handoff(interruption: Interruption, margin_s: float = 10.0) -> Handoff:
    # Only the decision rule is exercised here; storage and the store are not touched by `check`.
    return Handoff(store=None, checkpoints=None, resend=lambda m, d: None, interruption=interruption, margin_s=margin_s)  # type: ignore[arg-type]


def _clock(seconds_per_step: float) -> StepClock:
    return StepClock(seconds_per_step=seconds_per_step)


def test_without_a_notice_a_job_runs_on() -> None:
    _handoff(Interruption()).check(_clock(1.0), 1, 1000)


def test_a_job_finishes_when_its_remaining_steps_fit_the_notice() -> None:
    interruption = Interruption()
    interruption.set(Notice("aws", "terminate", time.time() + 120))
    _handoff(interruption).check(_clock(0.5), 20, 50)  # 30 steps × 0.5 s + 10 s margin = 25 s < 120 s


def test_a_job_checkpoints_when_its_remaining_steps_do_not_fit() -> None:
    interruption = Interruption()
    interruption.set(Notice("gcp", "terminate", time.time() + 30))
    with pytest.raises(JobInterruptedError, match="30 step"):
        _handoff(interruption).check(_clock(1.0), 20, 50)  # 30 s + 10 s margin > 30 s


def test_a_job_not_started_when_the_notice_comes_hands_off_at_once() -> None:
    interruption = Interruption()
    interruption.set(Notice("azure", "terminate", time.time() + 300))
    with pytest.raises(JobInterruptedError):
        _handoff(interruption).check(StepClock(), 0, 50)


def test_a_rebalance_recommendation_lets_jobs_finish() -> None:
    interruption = Interruption()
    interruption.set(Notice("aws", "rebalance", None))
    _handoff(interruption).check(_clock(10.0), 1, 150)


def test_the_step_clock_ignores_the_check_before_the_job_starts() -> None:
    clock = StepClock()
    handoff = _handoff(Interruption())
    handoff.check(clock, 0, 10)
    handoff.check(clock, 1, 10)
    assert clock.seconds_per_step is None
    handoff.check(clock, 2, 10)
    assert clock.seconds_per_step is not None and clock.seconds_per_step < 1


@pytest.mark.redis
def test_a_hand_off_is_fenced_and_does_not_use_up_an_attempt(redis_client: redis.Redis, tmp_path: Path) -> None:
    store, objects = JobStore(redis_client, ttl_s=3600), LocalStore(tmp_path)
    sent: list[tuple[JobMessage, float]] = []
    handoff = Handoff(store, objects, lambda m, d: sent.append((m, d)), Interruption(), margin_s=10)
    request = JobRequest(prompt="x", width=64, height=64, steps=4, seed=1).resolved("tiny")
    message = JobMessage(job_id=new_job_id(), request=request)
    store.create(message.job_id, request)
    first = store.claim(message.job_id, worker="a", lease_s=30, max_attempts=1)
    snapshot = Snapshot(2, 4, "DDIMScheduler", torch.zeros(1, 4, 8, 8), {}, [torch.Generator().get_state()])

    assert handoff.hand_off(message, first.attempt, snapshot, previous=None, handoffs=0)

    record = store.get(message.job_id)
    assert record.status is JobStatus.QUEUED and record.handoffs == 1 and record.attempts == 1
    assert record.checkpoint is not None and record.checkpoint.step == 2 and record.checkpoint.attempt == 1
    assert objects.head(record.checkpoint.key).size > 0
    [(resent, delay)] = sent
    assert resent.checkpoint == record.checkpoint and delay == 0
    assert not store.settle(message.job_id, first.attempt, JobStatus.SUCCEEDED)  # the old attempt is fenced off

    # max_attempts=1, yet the job runs again: a hand-off is not a crash.
    second = store.claim(message.job_id, worker="b", lease_s=30, max_attempts=1)
    assert second.outcome == "claimed" and second.attempt == 2
    # A stale hand-off by attempt 1 changes nothing and keeps the checkpoint attempt 2 resumes from.
    assert not handoff.hand_off(message, first.attempt, snapshot, previous=record.checkpoint, handoffs=1)
    assert store.get(message.job_id).status is JobStatus.RUNNING and len(sent) == 1
    assert objects.head(record.checkpoint.key).size > 0
    handoff.discard(record.checkpoint)
    with pytest.raises(ObjectNotFoundError):
        objects.head(record.checkpoint.key)
