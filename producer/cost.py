"""What GPU time costs: a price table, a usage ledger in Redis, and each job's share of the fleet's bill.

Workers record two things (see `gpu_worker/usage.py`): how long they were up, per UTC day, instance type and
capacity type (spot or on-demand), and how long they were busy with each job. A day's fleet bill is its uptime
priced from the table. Each job pays the same share of that bill as its share of the day's priced busy time, so
cold starts, idle minutes before a worker retires, and attempts lost to a spot reclaim are spread over the jobs
that ran instead of vanishing. Without uptime figures (no worker reported any), a job costs its busy time only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import redis
from pydantic import BaseModel, ConfigDict, Field

from . import jobhash, keys
from .jobhash import JobField, Pricer, Usage
from .jobs.costs import Capacity, JobCost
from .scripts import lua_script

__all__ = [
    "USAGE_TTL_S",
    "Capacity",
    "CostCalculator",
    "CostSummary",
    "DayCost",
    "InstancePrice",
    "JobCost",
    "LineCost",
    "PriceTable",
    "UsageLedger",
    "day_of",
]

#: Usage figures are kept this long (a bill is settled monthly; a year leaves room for disputes).
USAGE_TTL_S = 400 * 24 * 3600
_SEP = "|"
_CHUNK = 500


class InstancePrice(BaseModel):
    """US dollars per hour of one instance type, bought as spot and on demand."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spot: float = Field(ge=0, description="USD per hour as spot/preemptible capacity.")
    on_demand: float = Field(ge=0, description="USD per hour on demand.")

    def per_hour(self, capacity: Capacity) -> float:
        return self.spot if capacity is Capacity.SPOT else self.on_demand


class LineCost(BaseModel):
    """One instance type × capacity line of a day's bill."""

    model_config = ConfigDict(frozen=True)

    instance_type: str
    capacity: Capacity
    usd_per_hour: float | None
    uptime_s: float
    busy_s: float
    fleet_usd: float
    gpu_usd: float


class DayCost(BaseModel):
    """A UTC day's bill: what the fleet cost, how much of it ran jobs, and what went to cold starts and idling."""

    model_config = ConfigDict(frozen=True)

    day: date
    currency: str = "USD"
    fleet_usd: float = Field(description="Uptime of every worker at its rate (the cloud bill for GPU instances).")
    busy_usd: float = Field(
        description="Every job's busy time at its rate; above fleet_usd when jobs overlapped on a worker (threads,"
        " batches). Each job's share of the bill is its part of this."
    )
    gpu_usd: float = Field(description="busy_usd capped at fleet_usd: what the fleet spent running jobs.")
    overhead_usd: float = Field(description="fleet_usd minus gpu_usd: cold starts, idle time, lost attempts.")
    utilization: float | None = Field(description="gpu_usd ÷ fleet_usd.")
    jobs: int = Field(description="Job runs that recorded GPU time this day.")
    usd_per_job: float | None
    final: bool
    lines: list[LineCost]
    unpriced_instance_types: list[str] = Field(description="Types seen in usage but missing from the price table.")


class CostSummary(BaseModel):
    """The cost of a set of jobs (a batch): sums of their `JobCost`s."""

    model_config = ConfigDict(frozen=True)

    jobs: int
    jobs_with_usage: int
    gpu_s: float
    gpu_usd: float
    overhead_usd: float
    total_usd: float
    final: bool


class PriceTable:
    """Instance type → hourly prices, from `SDQ_PRICES` (JSON) and/or `SDQ_PRICES_FILE`."""

    def __init__(self, prices: Mapping[str, InstancePrice]) -> None:
        self.prices = dict(prices)

    @classmethod
    def load(cls, prices: Mapping[str, InstancePrice], path: Path | None = None) -> PriceTable:
        """The table in `prices`, over the one in the JSON file at `path` (if given)."""
        merged: dict[str, InstancePrice] = {}
        if path is not None:
            raw = json.loads(path.read_text())
            merged.update({name: InstancePrice.model_validate(value) for name, value in raw.items()})
        merged.update(prices)
        return cls(merged)

    def per_hour(self, instance_type: str, capacity: Capacity) -> float | None:
        price = self.prices.get(instance_type)
        return None if price is None else price.per_hour(capacity)


@dataclass(frozen=True)
class _Line:
    instance_type: str
    capacity: Capacity


def _field(kind: str, instance_type: str, capacity: Capacity) -> str:
    return _SEP.join((kind, instance_type, capacity.value))


def day_of(timestamp: float) -> date:
    """The UTC day of a Unix timestamp."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).date()


class UsageLedger:
    """Uptime and busy seconds in Redis, per UTC day and instance type × capacity."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._add_job = client.register_script(lua_script("usage"))

    def add_uptime(self, instance_type: str, capacity: Capacity, seconds: float, *, at: float) -> None:
        """Count `seconds` of a worker being up (billed), on the day of `at`."""
        key = keys.usage_day(day_of(at).isoformat())
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrbyfloat(key, _field("uptime_s", instance_type, capacity), seconds)
        pipe.expire(key, USAGE_TTL_S)
        pipe.execute()

    def add_job(self, job_id: str, instance_type: str, capacity: Capacity, seconds: float, *, at: float) -> bool:
        """Count `seconds` of busy time for `job_id` (False when its record no longer exists): on its record, in the
        day's ledger, and in the day's job totals (every job's and its tenant's, `jobs_day`)."""
        day = day_of(at)
        fields = jobhash.usage_fields(instance_type, capacity, day)
        tenant = self.client.hget(keys.job(job_id), JobField.TENANT.value)  # a record's tenant never changes
        args: list[str | float | int] = [
            seconds,
            _field("busy_s", instance_type, capacity),
            USAGE_TTL_S,
            JobField.GPU_S.value,
            JobField.USAGE_DAY.value,
            day.isoformat(),
            *(item for pair in fields.items() for item in pair),
        ]
        totals = [
            keys.jobs_usage_day(day.isoformat(), None),
            keys.jobs_usage_day(day.isoformat(), jobhash.text(tenant)) if tenant else "",
        ]
        added = self._add_job(keys=[keys.job(job_id), keys.usage_day(day.isoformat()), *totals], args=args)
        if added:
            self.client.hincrby(keys.usage_day(day.isoformat()), _field("jobs", instance_type, capacity), 1)
        return bool(added)

    def jobs_day(self, day: date, tenant: str | None) -> tuple[int, list[Usage]]:
        """The jobs of `tenant` (None: every job) with busy time on `day`, and that time per instance type ×
        capacity (one read, however many jobs)."""
        raw: dict[bytes, bytes] = self.client.hgetall(keys.jobs_usage_day(day.isoformat(), tenant))  # type: ignore[assignment]
        jobs, lines = 0, []
        for name, value in raw.items():
            field = name.decode()
            if field == "jobs":
                jobs = int(value)
                continue
            _, instance_type, capacity = field.split(_SEP, 2)
            lines.append(Usage(float(value), instance_type, Capacity(capacity), day))
        return jobs, lines

    def day_figures(self, day: date) -> dict[_Line, dict[str, float]]:
        """Raw figures of `day`: {(type, capacity): {"uptime_s", "busy_s", "jobs"}}."""
        raw: dict[bytes, bytes] = self.client.hgetall(keys.usage_day(day.isoformat()))  # type: ignore[assignment]
        lines: dict[_Line, dict[str, float]] = {}
        for name, value in raw.items():
            kind, instance_type, capacity = name.decode().split(_SEP, 2)
            line = _Line(instance_type, Capacity(capacity))
            lines.setdefault(line, {"uptime_s": 0.0, "busy_s": 0.0, "jobs": 0.0})[kind] = float(value)
        return lines


class CostCalculator:
    """Prices usage: per day, per job, per set of jobs."""

    def __init__(self, ledger: UsageLedger, prices: PriceTable, *, cache_s: float = 5.0) -> None:
        self.ledger = ledger
        self.prices = prices
        self.cache_s = cache_s
        self._cache: dict[date, tuple[float, DayCost]] = {}

    def _bill(self, day: date, today: date | None) -> DayCost:
        """`day(day)`, cached: a page of 50 job records reads the day's ledger once, not 50 times."""
        if today is not None:  # a caller choosing "today" (tests, reports) gets a fresh computation
            return self.day(day, today=today)
        cached = self._cache.get(day)
        now = time.monotonic()
        if cached is not None and (cached[1].final or cached[0] > now):
            return cached[1]
        if len(self._cache) > 64:
            self._cache.clear()
        bill = self.day(day)
        self._cache[day] = (now + self.cache_s, bill)
        return bill

    def day(self, day: date, *, today: date | None = None) -> DayCost:
        """The bill of `day` (UTC). `final` once the day is over."""
        today = today or datetime.now(timezone.utc).date()
        figures_by_line = self.ledger.day_figures(day)
        lines, unpriced = [], set()
        for line, figures in sorted(figures_by_line.items(), key=lambda kv: (kv[0].instance_type, kv[0].capacity)):
            rate = self.prices.per_hour(line.instance_type, line.capacity)
            if rate is None:
                unpriced.add(line.instance_type)
            per_s = (rate or 0.0) / 3600
            lines.append(
                LineCost(
                    instance_type=line.instance_type,
                    capacity=line.capacity,
                    usd_per_hour=rate,
                    uptime_s=figures["uptime_s"],
                    busy_s=figures["busy_s"],
                    fleet_usd=figures["uptime_s"] * per_s,
                    gpu_usd=figures["busy_s"] * per_s,
                )
            )
        jobs = int(sum(figures["jobs"] for figures in figures_by_line.values()))
        fleet = sum(line.fleet_usd for line in lines)
        gpu = sum(line.gpu_usd for line in lines)
        total = fleet if fleet > 0 else gpu  # no uptime reported: only busy time is known
        busy, gpu = gpu, min(gpu, total)
        return DayCost(
            day=day,
            fleet_usd=total,
            busy_usd=busy,
            gpu_usd=gpu,
            overhead_usd=total - gpu,
            utilization=gpu / total if total > 0 else None,
            jobs=jobs,
            usd_per_job=total / jobs if jobs else None,
            final=day < today,
            lines=lines,
            unpriced_instance_types=sorted(unpriced),
        )

    def pricer(self, *, today: date | None = None) -> Pricer:
        """Prices usages with the bills it reads, so a page of jobs of the same day reads that day's ledger once."""
        bills: dict[date, DayCost] = {}

        def price(usage: Usage) -> JobCost:
            if usage.day not in bills:
                bills[usage.day] = self._bill(usage.day, today)
            return self._price(usage, bills[usage.day])

        return price

    def job(self, fields: Mapping[str, str], *, today: date | None = None) -> JobCost | None:
        """A job's cost from its record's fields (None until a worker recorded GPU time for it)."""
        usage = jobhash.usage(fields)
        return None if usage is None else self.pricer(today=today)(usage)

    def _price(self, usage: Usage, bill: DayCost) -> JobCost:
        rate = self.prices.per_hour(usage.instance_type, usage.capacity)
        weight = usage.gpu_s * (rate or 0.0) / 3600
        share = weight / bill.busy_usd if bill.busy_usd > 0 else 0.0
        total, gpu_usd = share * bill.fleet_usd, share * bill.gpu_usd
        return JobCost(
            gpu_s=usage.gpu_s,
            instance_type=usage.instance_type,
            capacity=usage.capacity,
            usd_per_hour=rate,
            gpu_usd=gpu_usd,
            overhead_usd=total - gpu_usd,
            total_usd=total,
            day=usage.day,
            final=bill.final,
        )

    def job_by_id(self, job_id: str) -> JobCost | None:
        """The cost of one job (None when it recorded no GPU time, or its record is gone)."""
        return next(iter(self._costs([job_id])), None)

    def jobs(self, job_ids: Iterable[str]) -> CostSummary:
        """The cost of a set of jobs, e.g. a batch of 10,000 images: the sum of their job costs."""
        ids = list(job_ids)
        costs = self._costs(ids)
        return CostSummary(
            jobs=len(ids),
            jobs_with_usage=len(costs),
            gpu_s=sum(c.gpu_s for c in costs),
            gpu_usd=sum(c.gpu_usd for c in costs),
            overhead_usd=sum(c.overhead_usd for c in costs),
            total_usd=sum(c.total_usd for c in costs),
            final=all(c.final for c in costs),
        )

    def _costs(self, job_ids: list[str]) -> list[JobCost]:
        price = self.pricer()
        costs = []
        for start in range(0, len(job_ids), _CHUNK):
            pipe = self.ledger.client.pipeline(transaction=False)
            for job_id in job_ids[start : start + _CHUNK]:
                pipe.hmget(keys.job(job_id), jobhash.USAGE_FIELDS)
            for values in pipe.execute():
                usage = jobhash.usage_of(values)
                if usage is not None:
                    costs.append(price(usage))
        return costs
