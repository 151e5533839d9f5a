"""`GET /v1/fleet/history`: the controller's last hour (work, workers holding, desired, capacity) for charts;
`GET /v1/fleet/workers`: what each live worker reports (GPU utilization and memory, idle timer)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..controller.history import MAX_SAMPLES, SAMPLE_S, FleetHistory
from ..worker_status import WorkerList, read_statuses
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


@router.get("/workers", response_model=WorkerList, summary="What each worker reports")
def workers(http: Request, caller: AdminDep) -> WorkerList:
    """Every live worker's last report (one every few seconds): its GPU's utilization and memory (null on a CPU
    worker, with the reason), jobs running, seconds idle and seconds until its idle timeout retires it. A worker
    that stops reporting drops out after about three report intervals. Fleet-wide: an `admin` key."""
    return read_statuses(Deps.of(http).service.store.client)
