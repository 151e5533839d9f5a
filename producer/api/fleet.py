"""`GET /v1/fleet/history`: the controller's last hour (work, workers holding, desired, capacity) for charts."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..controller.history import MAX_SAMPLES, SAMPLE_S, FleetHistory
from .auth import AdminDep
from .deps import Deps
from .errors import ERROR_RESPONSES
from .params import QueryInt

router = APIRouter(prefix="/v1/fleet", tags=["scaling"], responses=ERROR_RESPONSES)


class FleetPoint(BaseModel):
    """One sample the controller took."""

    model_config = ConfigDict(frozen=True)

    at: float = Field(description="Unix seconds.")
    work_remaining: int
    pending: int
    in_flight: int
    workers_holding: int
    desired: int
    capacity: int | None = Field(description="The provider's size; null when it reports none.")
    action: str


class FleetHistoryPage(BaseModel):
    """Samples oldest first; empty while no controller runs."""

    model_config = ConfigDict(frozen=True)

    sample_s: float
    samples: list[FleetPoint]


@router.get("/history", response_model=FleetHistoryPage, summary="The fleet over the last hour")
def history(
    http: Request,
    caller: AdminDep,
    minutes: Annotated[QueryInt, Query(ge=1, le=int(MAX_SAMPLES * SAMPLE_S // 60))] = 60,
) -> FleetHistoryPage:
    """One sample every 10 s from `sdq controller`: work remaining, workers holding, desired and capacity.
    Fleet-wide: an `admin` key."""
    samples = FleetHistory(Deps.of(http).service.store.client).read(since=time.time() - minutes * 60)
    return FleetHistoryPage(sample_s=SAMPLE_S, samples=[FleetPoint(**vars(s)) for s in samples])
