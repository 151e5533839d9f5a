"""Cost accounting: the arithmetic of shares on a real Redis ledger, and the figures through the real API, recorded
by a real worker process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path

import httpx
import pytest
import redis

from producer import keys
from producer.cost import Capacity, CostCalculator, InstancePrice, PriceTable, UsageLedger
from producer.jobs import JobRequest, JobStatus, new_job_id
from producer.store import JobStore, Owner
from tests.support import Stack, start_stack, wait_for

pytestmark = pytest.mark.redis

PRICES = {"g5.xlarge": InstancePrice(spot=0.40, on_demand=1.00), "g6.xlarge": InstancePrice(spot=0.30, on_demand=0.80)}
DAY = date(2026, 3, 1)
AT = datetime(2026, 3, 1, 12, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def ledger(redis_client: redis.Redis) -> UsageLedger:
    return UsageLedger(redis_client)


@pytest.fixture
def calculator(ledger: UsageLedger) -> CostCalculator:
    return CostCalculator(ledger, PriceTable(PRICES))


def _job(redis_client: redis.Redis) -> str:
    job_id = new_job_id()
    JobStore(redis_client, ttl_s=3600).create(job_id, JobRequest(prompt="a cat").resolved("tiny"))
    return job_id


def test_jobs_share_the_days_bill_in_proportion_to_their_gpu_time(
    redis_client: redis.Redis, ledger: UsageLedger, calculator: CostCalculator
) -> None:
    a, b, c = _job(redis_client), _job(redis_client), _job(redis_client)
    ledger.add_uptime("g5.xlarge", Capacity.SPOT, 3600, at=AT)  # one spot hour: $0.40
    assert ledger.add_job(a, "g5.xlarge", Capacity.SPOT, 600, at=AT)
    assert ledger.add_job(a, "g5.xlarge", Capacity.SPOT, 300, at=AT)  # a second attempt adds up
    assert ledger.add_job(b, "g5.xlarge", Capacity.SPOT, 900, at=AT)

    bill = calculator.day(DAY, today=date(2026, 3, 2))
    assert bill.fleet_usd == pytest.approx(0.40) and bill.gpu_usd == pytest.approx(0.20)
    assert bill.overhead_usd == pytest.approx(0.20) and bill.utilization == pytest.approx(0.5)
    assert bill.jobs == 3 and bill.usd_per_job == pytest.approx(0.40 / 3) and bill.final

    cost = calculator.job_by_id(a)
    assert cost is not None and cost.gpu_s == 900 and cost.usd_per_hour == 0.40
    assert cost.gpu_usd == pytest.approx(0.10) and cost.overhead_usd == pytest.approx(0.10)
    assert cost.total_usd == pytest.approx(0.20) and cost.capacity is Capacity.SPOT and cost.day == DAY
    assert calculator.job_by_id(c) is None  # never ran

    batch = calculator.jobs([a, b, c])
    assert (batch.jobs, batch.jobs_with_usage) == (3, 2)
    assert batch.total_usd == pytest.approx(bill.fleet_usd)  # the jobs pay the whole bill, no more
    assert batch.gpu_usd + batch.overhead_usd == pytest.approx(batch.total_usd)


def test_mixed_instance_types_are_priced_each_at_its_own_rate(
    redis_client: redis.Redis, ledger: UsageLedger, calculator: CostCalculator
) -> None:
    spot, on_demand = _job(redis_client), _job(redis_client)
    ledger.add_uptime("g5.xlarge", Capacity.SPOT, 1800, at=AT)  # $0.20
    ledger.add_uptime("g6.xlarge", Capacity.ON_DEMAND, 1800, at=AT)  # $0.40
    ledger.add_job(spot, "g5.xlarge", Capacity.SPOT, 1800, at=AT)  # busy the whole time: $0.20
    ledger.add_job(on_demand, "g6.xlarge", Capacity.ON_DEMAND, 900, at=AT)  # $0.20 of its $0.40
    bill = calculator.day(DAY)
    assert [(line.instance_type, line.capacity) for line in bill.lines] == [
        ("g5.xlarge", Capacity.SPOT),
        ("g6.xlarge", Capacity.ON_DEMAND),
    ]
    assert bill.fleet_usd == pytest.approx(0.60) and bill.gpu_usd == pytest.approx(0.40)
    total = calculator.jobs([spot, on_demand])
    assert total.total_usd == pytest.approx(0.60)
    cost = calculator.job_by_id(spot)
    assert cost is not None and cost.total_usd == pytest.approx(0.20 * 0.60 / 0.40)


def test_without_uptime_a_job_costs_its_gpu_time_and_unknown_types_are_flagged(
    redis_client: redis.Redis, ledger: UsageLedger, calculator: CostCalculator
) -> None:
    job_id, other = _job(redis_client), _job(redis_client)
    ledger.add_job(job_id, "g5.xlarge", Capacity.ON_DEMAND, 360, at=AT)
    ledger.add_job(other, "p9.mystery", Capacity.SPOT, 360, at=AT)
    cost = calculator.job_by_id(job_id)
    assert cost is not None and cost.total_usd == pytest.approx(0.10) and cost.overhead_usd == pytest.approx(0.0)
    bill = calculator.day(DAY)
    assert bill.unpriced_instance_types == ["p9.mystery"] and bill.fleet_usd == pytest.approx(0.10)
    unknown = calculator.job_by_id(other)
    assert unknown is not None and unknown.usd_per_hour is None and unknown.total_usd == 0


def test_usage_for_a_job_whose_record_is_gone_creates_no_stub_record(
    redis_client: redis.Redis, ledger: UsageLedger
) -> None:
    job_id = new_job_id()
    assert not ledger.add_job(job_id, "g5.xlarge", Capacity.SPOT, 10, at=AT)
    assert not redis_client.exists(keys.job(job_id))


def test_the_price_table_merges_a_file_under_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"g5.xlarge": {"spot": 9, "on_demand": 9}, "a10": {"spot": 1, "on_demand": 2}}))
    table = PriceTable.load(PRICES, path)
    assert table.per_hour("g5.xlarge", Capacity.SPOT) == 0.40 and table.per_hour("a10", Capacity.ON_DEMAND) == 2
    assert table.per_hour("nope", Capacity.SPOT) is None


@pytest.fixture(scope="module")
def stack(redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    prices = json.dumps({"g5.xlarge": {"spot": 0.36, "on_demand": 1.006}})
    running = start_stack(
        tmp_path_factory.mktemp("cost"), redis_server, model_cache, SDQ_PRICES=prices, SDQ_WORKER_CONCURRENCY="2"
    )
    yield running
    running.stop()


@pytest.mark.slow
def test_a_real_worker_records_gpu_time_and_the_api_prices_it(stack: Stack) -> None:
    stack.start_worker(SDQ_INSTANCE_TYPE="g5.xlarge", SDQ_CAPACITY_TYPE="spot", SDQ_USAGE_INTERVAL_S="0.5")
    with stack.client() as client, httpx.Client(base_url=stack.api_url, timeout=10) as http:
        record = client.wait(client.submit("a fox", width=64, height=64, steps=2).id, timeout_s=120)
        assert record.status is JobStatus.SUCCEEDED, record.error
        body = wait_for(lambda: http.get(f"/v1/jobs/{record.id}").json()["cost"], timeout_s=30)
        assert body["instance_type"] == "g5.xlarge" and body["capacity"] == "spot" and body["usd_per_hour"] == 0.36
        assert body["gpu_s"] > 0 and body["total_usd"] >= body["gpu_usd"] > 0 and body["final"] is False

        today = datetime.now(timezone.utc).date().isoformat()
        bill = wait_for(lambda: (b := http.get("/v1/costs", params={"day": today}).json())["fleet_usd"] > 0 and b)
        assert bill["jobs"] >= 1 and bill["fleet_usd"] >= bill["gpu_usd"] > 0 and bill["currency"] == "USD"
        assert http.get("/v1/costs").json()["day"] == today

        bad = http.get("/v1/costs", params={"day": "yesterday"})
        assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "day"


def test_scaling_endpoint_reports_work_and_desired_workers(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=10) as http:
        body = http.get("/v1/scaling").json()
    assert body["queue"] == "sdq-generate+sdq-batch" and body["worker_concurrency"] == 2
    parts = body["pending"] + body["delayed"] + body["in_flight"] + body["dead_held"]
    assert body["work_remaining"] == parts and body["desired_workers"] == -(-parts // 2)


def test_a_tenants_day_is_priced_from_its_totals_not_from_its_job_records(
    redis_client: redis.Redis, ledger: UsageLedger, calculator: CostCalculator
) -> None:
    """`GET /v1/costs/tenant` reads one hash whatever the tenant ran: it matches the sum of the jobs' own costs,
    counts a job with two attempts once, and still holds after the records expired."""
    from producer.tenant_costs import tenant_day_cost

    store = JobStore(redis_client, ttl_s=3600)
    mine, theirs = new_job_id(), new_job_id()
    store.create(mine, JobRequest(prompt="a cat").resolved("tiny"), owner=Owner(tenant="acme"))
    store.create(theirs, JobRequest(prompt="a dog").resolved("tiny"), owner=Owner(tenant="globex"))
    ledger.add_uptime("g5.xlarge", Capacity.SPOT, 3600, at=AT)
    ledger.add_uptime("g6.xlarge", Capacity.ON_DEMAND, 3600, at=AT)
    assert ledger.add_job(mine, "g5.xlarge", Capacity.SPOT, 600, at=AT)
    assert ledger.add_job(mine, "g5.xlarge", Capacity.SPOT, 300, at=AT)  # a second attempt
    assert ledger.add_job(theirs, "g6.xlarge", Capacity.ON_DEMAND, 900, at=AT)
    after = date(2026, 3, 2)
    own = [calculator.job_by_id(job_id) for job_id in (mine, theirs)]
    acme = tenant_day_cost(calculator, "acme", DAY, today=after)
    assert acme.jobs == 1 and acme.gpu_s == 900 and acme.final
    assert acme.total_usd == pytest.approx(own[0].total_usd)  # type: ignore[union-attr]
    assert tenant_day_cost(calculator, "globex", DAY, today=after).total_usd == pytest.approx(own[1].total_usd)  # type: ignore[union-attr]
    everyone = tenant_day_cost(calculator, None, DAY, today=after)
    assert everyone.jobs == 2 and everyone.gpu_s == 1800
    assert everyone.total_usd == pytest.approx(calculator.day(DAY, today=after).fleet_usd)
    redis_client.delete(keys.job(mine), keys.job(theirs))  # the records expired: the day's figures stay
    assert tenant_day_cost(calculator, "acme", DAY, today=after) == acme
    assert tenant_day_cost(calculator, "globex", date(2026, 3, 3), today=after).jobs == 0
