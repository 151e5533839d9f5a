"""One tenant's costs on a UTC day: the sum of its jobs' costs, each priced as `GET /v1/jobs/{id}` prices it.

A job's cost is its busy time's share of the day's fleet bill (producer/cost.py), so a tenant's sum is its share
of that day: what a tenant key may see instead of the fleet-wide bill. It is summed at read time over the jobs the
tenant still has (records live `SDQ_JOB_TTL_S`, a week by default): days older than that show no jobs.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import redis
from pydantic import BaseModel, ConfigDict, Field

from . import keys
from .cost import CostCalculator, JobCost
from .jobhash import USAGE_FIELDS, JobField

_CHUNK = 500


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
    costs: CostCalculator, client: redis.Redis, tenant: str | None, day: date, *, today: date | None = None
) -> TenantDayCost:
    """The cost of `tenant`'s jobs (every job when None) whose GPU time was recorded on `day`."""
    index = keys.tenant_index(tenant, None) if tenant is not None else keys.index(None)
    job_ids = [i.decode() if isinstance(i, bytes) else str(i) for i in client.zrange(index, 0, -1)]
    found: list[JobCost] = []
    wanted = day.isoformat()
    for start in range(0, len(job_ids), _CHUNK):
        pipe = client.pipeline(transaction=False)
        for job_id in job_ids[start : start + _CHUNK]:
            pipe.hmget(keys.job(job_id), list(USAGE_FIELDS))
        for values in pipe.execute():
            fields = {n: v.decode() for n, v in zip(USAGE_FIELDS, values, strict=True) if v is not None}
            if fields.get(JobField.USAGE_DAY) != wanted:
                continue
            cost = costs.job(fields, today=today)
            if cost is not None:
                found.append(cost)
    final = all(c.final for c in found) if found else day < (today or datetime.now(timezone.utc).date())
    return TenantDayCost(
        day=day,
        tenant=tenant,
        jobs=len(found),
        gpu_s=sum(c.gpu_s for c in found),
        gpu_usd=sum(c.gpu_usd for c in found),
        overhead_usd=sum(c.overhead_usd for c in found),
        total_usd=sum(c.total_usd for c in found),
        final=final,
    )
