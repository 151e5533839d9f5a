"""A page of `GET /v1/jobs` reads its records once and prices them from what it read: the Redis round trips it
costs do not grow with the page (counted by a wrapper around a real client, on a real redis-server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.api.scaling import Fleet
from producer.broker import make_broker
from producer.controller.scaler import ScalingPolicy
from producer.cost import Capacity, CostCalculator, InstancePrice, PriceTable, UsageLedger
from producer.jobs import JobRequest, new_job_id
from producer.service import JobService
from producer.store import JobStore
from storage import open_store

pytestmark = pytest.mark.redis

PRICES = {"g5.xlarge": InstancePrice(spot=0.40, on_demand=1.00)}
DAYS = [
    datetime(2026, 3, 1, 12, tzinfo=timezone.utc).timestamp(),
    datetime(2026, 3, 2, 12, tzinfo=timezone.utc).timestamp(),
]


class CountingRedis(redis.Redis):
    """A real client that counts its round trips: each command, and each pipeline it sends."""

    round_trips = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        send = pipe.execute

        def execute(raise_on_error: bool = True) -> Any:
            self.round_trips += 1
            return send(raise_on_error)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


@pytest.fixture
def counting(redis_server: str) -> Iterator[CountingRedis]:
    client = CountingRedis.from_url(redis_server)
    client.flushdb()
    yield client
    client.close()


def test_a_page_of_100_jobs_is_read_and_priced_in_a_few_round_trips(counting: CountingRedis, tmp_path: Path) -> None:
    store = JobStore(counting, ttl_s=3600)
    ledger = UsageLedger(counting)
    costs = CostCalculator(ledger, PriceTable(PRICES))
    ids = [new_job_id() for _ in range(100)]
    for index, job_id in enumerate(ids):
        store.create(job_id, JobRequest(prompt=f"item {index}").resolved("tiny"))
        if index % 3:  # two jobs in three ran, on one of two days; the rest have no cost yet
            assert ledger.add_job(job_id, "g5.xlarge", Capacity.SPOT, 10.0 + index, at=DAYS[index % 2])
    ledger.add_uptime("g5.xlarge", Capacity.SPOT, 7200, at=DAYS[0])
    service = JobService(
        store, make_broker(counting, heartbeat_timeout_s=60), queue="sdq-generate", default_model="tiny"
    )
    fleet = Fleet(ScalingPolicy(), 60, costs)
    app = create_app(service, open_store((tmp_path / "objects").as_uri()), url_expiry=timedelta(hours=1), fleet=fleet)
    expected = {job_id: costs.job_by_id(job_id) for job_id in ids}  # priced one by one, the slow way

    with TestClient(app) as http:
        before = counting.round_trips
        page = http.get("/v1/jobs", params={"limit": 100})
        used = counting.round_trips - before
    assert page.status_code == 200
    jobs = page.json()["jobs"]
    assert len(jobs) == 100 and {job["id"] for job in jobs} == set(ids)
    # The index, the page's hashes (one pipeline), and each day's bill once: not one read per record.
    assert used <= 2 + len(DAYS), used
    for job in jobs:
        cost = expected[job["id"]]
        assert job["cost"] == (cost.model_dump(mode="json") if cost is not None else None)
    assert sum(job["cost"] is not None for job in jobs) == 66
