"""`GET /v1/costs`: a UTC day's GPU bill: fleet cost, the part that ran jobs, and cold starts + idle time."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query, Request

from ..cost import DayCost
from .auth import CallerDep
from .errors import ERROR_RESPONSES
from .scaling import Fleet

router = APIRouter(prefix="/v1/costs", tags=["costs"], responses=ERROR_RESPONSES)


@router.get("", response_model=DayCost, summary="A day's GPU cost")
def day_cost(
    http: Request,
    caller: CallerDep,
    day: Annotated[date | None, Query(description="UTC day, YYYY-MM-DD; default today.")] = None,
) -> DayCost:
    """The fleet's bill for one UTC day, priced with the server's price table (`final` once the day is over).

    A job's own cost is on its record (`GET /v1/jobs/{id}` → `cost`)."""
    return Fleet.of(http).costs.day(day or datetime.now(timezone.utc).date())
