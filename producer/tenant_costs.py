"""One tenant's costs on a UTC day: the sum of its jobs' costs, each priced as `GET /v1/jobs/{id}` prices it.

A job's cost is its busy time's share of the day's fleet bill (producer/cost.py): linear in its busy seconds on
each instance type × capacity. So a tenant's day is priced from its totals of those seconds, which the worker adds
with each job's usage (`UsageLedger.jobs_day`): one read however many jobs the tenant ran, and kept as long as the
ledger (a job's record lives only `SDQ_JOB_TTL_S`). A job whose attempts ran on two days counts on each, with the
time it ran that day.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from .cost import CostCalculator


class TenantDayCost(BaseModel):
    """What a tenant's jobs cost on one UTC day, in USD."""

    model_config = ConfigDict(frozen=True)

    day: date
    tenant: str | None = Field(description="The tenant; null in open mode (no keys: every job).")
    currency: str = "USD"
    jobs: int = Field(description="The tenant's jobs whose GPU time was recorded on this day.")
    gpu_s: float = Field(description="Their busy seconds on the GPU workers.")
    gpu_usd: float = Field(description="Their share of the day's GPU time that ran jobs.")
    overhead_usd: float = Field(description="Their share of the day's cold starts, idle time and lost attempts.")
    total_usd: float
    final: bool = Field(description="False while the day is still running: the shares may still change.")


def tenant_day_cost(
    costs: CostCalculator, tenant: str | None, day: date, *, today: date | None = None
) -> TenantDayCost:
    """The cost of `tenant`'s jobs (every job when None) whose GPU time was recorded on `day`."""
    jobs, lines = costs.ledger.jobs_day(day, tenant)
    price = costs.pricer(today=today)
    found = [price(usage) for usage in lines]
    final = all(c.final for c in found) if found else day < (today or datetime.now(timezone.utc).date())
    return TenantDayCost(
        day=day,
        tenant=tenant,
        jobs=jobs,
        gpu_s=sum(c.gpu_s for c in found),
        gpu_usd=sum(c.gpu_usd for c in found),
        overhead_usd=sum(c.overhead_usd for c in found),
        total_usd=sum(c.total_usd for c in found),
        final=final,
    )
