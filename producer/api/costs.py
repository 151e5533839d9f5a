"""`GET /v1/costs`: a UTC day's GPU bill for the fleet (admin keys), and `GET /v1/costs/tenant`: one tenant's share.

The fleet bill shows every tenant's activity (fleet cost, utilization, instance lines), so it needs an `admin`
key; a `tenant` key sees what its own jobs cost through `/v1/costs/tenant` (producer/tenant_costs.py).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query, Request

from ..cost import DayCost
from ..errors import ForbiddenError
from ..tenant_costs import TenantDayCost, tenant_day_cost
from .auth import AdminDep, CallerDep
from .errors import ERROR_RESPONSES
from .params import IsoDay
from .scaling import Fleet

router = APIRouter(prefix="/v1/costs", tags=["costs"], responses=ERROR_RESPONSES)
Day = Annotated[IsoDay | None, Query(description="UTC day, YYYY-MM-DD; default today.")]


def _today() -> date:
    return datetime.now(timezone.utc).date()


@router.get("", response_model=DayCost, summary="A day's GPU cost (fleet-wide: admin keys)")
def day_cost(http: Request, caller: AdminDep, day: Day = None) -> DayCost:
    """The fleet's bill for one UTC day, priced with the server's price table (`final` once the day is over).

    A job's own cost is on its record (`GET /v1/jobs/{id}` → `cost`); a tenant's, at `GET /v1/costs/tenant`."""
    return Fleet.of(http).costs.day(day or _today())


@router.get("/tenant", response_model=TenantDayCost, summary="What a tenant's jobs cost on a day")
def tenant_cost(
    http: Request,
    caller: CallerDep,
    day: Day = None,
    tenant: Annotated[
        str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$", description="Another tenant (admin only).")
    ] = None,
) -> TenantDayCost:
    """The sum of the caller's tenant's job costs whose GPU time was recorded on the day (each job's share of that
    day's fleet bill, as on its record). An `admin` key may name any `tenant`."""
    if tenant is not None and tenant != caller.tenant and not caller.admin:
        raise ForbiddenError("only an admin key may read another tenant's costs")
    who = tenant if tenant is not None else caller.tenant
    return tenant_day_cost(Fleet.of(http).costs, who, day or _today())
