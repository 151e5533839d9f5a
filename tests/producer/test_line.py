"""Queue position in a real Redis: exact against a brute-force count of the line, across both lanes (interactive
jobs, then batch jobs), cancellations, claims, hand-backs and reaped leases."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from producer import keys
from producer.batches import BatchService
from producer.broker import make_broker
from producer.jobs import BatchRequest, JobRequest, JobStatus
from producer.service import JobService
from producer.store import JobStore, Owner
from tests.support import make_app

pytestmark = pytest.mark.redis

TINY = {"width": 64, "height": 64, "steps": 2}


@dataclass
class Model:
    """The brute-force reference: every job's lane and the order in which it (last) entered the queue."""

    queued: dict[str, tuple[int, int]] = field(default_factory=dict)  # job id → (lane, enqueue order)
    attempts: dict[str, int] = field(default_factory=dict)
    clock: int = 0

    def enqueue(self, job_id: str, *, batch: bool) -> None:
        self.clock += 1
        self.queued[job_id] = (1 if batch else 0, self.clock)

    def position(self, job_id: str) -> int:
        place = self.queued[job_id]
        return sum(1 for other in self.queued.values() if other < place)


@pytest.fixture
def services(redis_client: redis.Redis) -> tuple[JobService, BatchService]:
    jobs = JobService(
        JobStore(redis_client, ttl_s=3600),
        make_broker(redis_client, heartbeat_timeout_s=60),
        queue="q",
        default_model="tiny",
    )
    return jobs, BatchService(jobs, queue="qb")


def _check(store: JobStore, model: Model, every: list[str]) -> None:
    records = {r.id: r for r in store.get_many(every)}
    for job_id in every:
        record = records.get(job_id) or store.get(job_id)
        if job_id in model.queued:
            assert record.status is JobStatus.QUEUED
            assert record.queue_position == model.position(job_id), job_id
        else:
            assert record.queue_position is None and record.status is not JobStatus.QUEUED
        assert store.get(job_id).queue_position == record.queue_position  # the single read agrees with the page


def test_position_is_exact_across_lanes_cancellations_claims_and_hand_backs(
    services: tuple[JobService, BatchService],
) -> None:
    jobs, batches = services
    store = jobs.store
    owner = Owner(tenant="t1", key_id="k1")
    model, every = Model(), []
    rng = random.Random(13)
    for step in range(160):
        action = rng.choice(["job", "job", "batch", "cancel", "claim", "claim", "hand back", "reap", "finish"])
        queued = sorted(model.queued)
        running = sorted(set(model.attempts) - set(model.queued))
        if action == "job":
            record = jobs.submit(JobRequest(prompt=f"job {step}", **TINY), owner=owner)
            model.enqueue(record.id, batch=False)
            every.append(record.id)
        elif action == "batch":
            created, _ = batches.create(
                BatchRequest(defaults=TINY, items=[{"prompt": f"item {step}.{i}"} for i in range(rng.randint(1, 6))]),
                owner=owner,
            )
            for job_id in created.job_ids:
                model.enqueue(job_id, batch=True)
            every.extend(created.job_ids)
        elif action == "cancel" and queued:
            victim = rng.choice(queued)
            assert jobs.cancel(victim).status is JobStatus.CANCELED
            del model.queued[victim]
            model.attempts.pop(victim, None)
        elif action == "claim" and queued:
            # Workers claim in no strict order (cohorts, several workers): any queued job may be taken.
            taken = rng.choice(queued)
            claim = store.claim(taken, worker="w", lease_s=30 if rng.random() < 0.7 else 0.01, max_attempts=9)
            assert claim.attempt is not None
            model.attempts[taken] = claim.attempt
            del model.queued[taken]
        elif action == "hand back" and running:
            # A transient failure or a spot hand-off: back in line, at the back of its lane.
            back = rng.choice(running)
            assert store.settle(back, model.attempts[back], JobStatus.QUEUED, worker="")
            model.enqueue(back, batch=store.get(back).batch_id is not None)
        elif action == "reap" and running:
            reaped = rng.choice(running)
            outcome = store.reap(reaped, model.attempts[reaped], grace_s=0, max_attempts=9, note="lost")
            if outcome.outcome == "requeued":
                model.enqueue(reaped, batch=store.get(reaped).batch_id is not None)
        elif action == "finish" and running:
            done = rng.choice(running)
            assert store.settle(done, model.attempts[done], JobStatus.SUCCEEDED, outputs=[])
            del model.attempts[done]
        if step % 10 == 0:
            time.sleep(0.02)  # let the short leases above run out, so some reaps succeed
            _check(store, model, every)
    _check(store, model, every)
    assert store.client.zcard(keys.LINE) == len(model.queued)
    # The API key's queued count (its quota) moved in the same steps.
    assert int(store.client.get(keys.key_queued("k1")) or 0) == len(model.queued)
    lanes = {lane for lane, _ in model.queued.values()}
    assert lanes == {0, 1}, "the run should leave jobs of both lanes queued"


def test_a_batch_job_waits_behind_every_interactive_job_even_one_submitted_later(
    services: tuple[JobService, BatchService],
) -> None:
    jobs, batches = services
    created, _ = batches.create(BatchRequest(defaults=TINY, items=[{"prompt": "b0"}, {"prompt": "b1"}]))
    late = jobs.submit(JobRequest(prompt="interactive", **TINY))
    assert jobs.get(late.id).queue_position == 0
    assert [jobs.get(j).queue_position for j in created.job_ids] == [1, 2]
    jobs.cancel(late.id)
    assert [jobs.get(j).queue_position for j in created.job_ids] == [0, 1]


def test_the_global_queued_listing_pages_newest_first_through_both_lanes(
    services: tuple[JobService, BatchService],
) -> None:
    jobs, batches = services
    order = []
    for round_ in range(3):
        order.append(jobs.submit(JobRequest(prompt=f"i{round_}", **TINY)).id)
        created, _ = batches.create(BatchRequest(defaults=TINY, items=[{"prompt": f"b{round_}.{i}"} for i in range(3)]))
        order.extend(created.job_ids)
    seen, cursor = [], None
    while True:
        page = jobs.list(status=JobStatus.QUEUED, limit=4, cursor=cursor)
        seen.extend(job.id for job in page.jobs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == order[::-1]


def test_the_api_shows_each_queued_jobs_position_and_none_once_it_left_the_line(
    redis_client: redis.Redis, redis_server: str, tmp_path: Path
) -> None:
    with TestClient(make_app(redis_server, tmp_path, auth=False)) as http:
        first, second = (http.post("/v1/jobs", json={"prompt": p, **TINY}).json()["id"] for p in ("one", "two"))
        batch = http.post("/v1/batches", json={"defaults": TINY, "items": [{"prompt": "b1"}, {"prompt": "b2"}]}).json()
        late = http.post("/v1/jobs", json={"prompt": "three", **TINY}).json()["id"]
        order = [first, second, late, *batch["job_ids"]]
        assert [http.get(f"/v1/jobs/{j}").json()["queue_position"] for j in order] == [0, 1, 2, 3, 4]
        listed = {
            j["id"]: j["queue_position"] for j in http.get("/v1/jobs", params={"status": "queued"}).json()["jobs"]
        }
        assert listed == dict(zip(order, range(5), strict=True))
        canceled = http.post(f"/v1/jobs/{first}/cancel").json()
        assert canceled["status"] == "canceled" and canceled["queue_position"] is None
        assert [http.get(f"/v1/jobs/{j}").json()["queue_position"] for j in order[1:]] == [0, 1, 2, 3]
