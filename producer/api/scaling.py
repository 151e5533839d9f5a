"""`GET /v1/scaling`: the work remaining and the workers it needs, for KEDA's metrics-api scaler (and humans).

KEDA on Kubernetes: a ScaledJob with a `metrics-api` trigger, `valueLocation: work_remaining` and `targetValue`
= per-worker concurrency starts ceil(work ÷ target) worker pods. The figure counts in-flight and delayed messages,
so KEDA never sees 0 while jobs still run.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ..controller.scaler import ScalingPolicy
from ..controller.work import read_work
from ..cost import CostCalculator, PriceTable, UsageLedger
from ..service import JobService
from ..settings import ApiSettings
from .auth import ScalingDep
from .deps import Deps
from .errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/scaling", tags=["scaling"], responses=ERROR_RESPONSES)


@dataclass(frozen=True)
class Fleet:
    """What the API knows about the GPU fleet: how it scales, when a worker counts as dead, what it costs."""

    policy: ScalingPolicy
    heartbeat_timeout_s: float
    costs: CostCalculator
    #: The job queues the GPU workers serve (interactive and batch); work remaining counts them all.
    queues: tuple[str, ...] = ("sdq-generate", "sdq-batch")

    @classmethod
    def default(cls, service: JobService, *, batch_queue: str = "sdq-batch") -> Fleet:
        """Default bounds, the broker's heartbeat timeout, and an empty price table."""
        timeout_s = service.broker.heartbeat_timeout / 1000
        costs = CostCalculator(UsageLedger(service.store.client), PriceTable({}))
        return cls(ScalingPolicy(), timeout_s, costs, (service.queue, batch_queue))

    @classmethod
    def from_settings(cls, settings: ApiSettings, client: redis.Redis) -> Fleet:
        """The fleet as `SDQ_MIN_WORKERS`, `SDQ_MAX_WORKERS`, `SDQ_WORKER_CONCURRENCY` and the prices describe it."""
        policy = ScalingPolicy(settings.min_workers, settings.max_workers, settings.worker_concurrency)
        prices = PriceTable.load(settings.prices, settings.prices_file)
        costs = CostCalculator(UsageLedger(client), prices)
        return cls(policy, settings.heartbeat_timeout_s, costs, (settings.queue, settings.batch_queue))

    @staticmethod
    def of(request: Request) -> Fleet:
        fleet: Fleet = request.app.state.fleet
        return fleet


class Scaling(BaseModel):
    """The queue's work remaining, by where the messages are, and the workers that work needs."""

    queue: str
    work_remaining: int = Field(description="pending + delayed + in_flight + dead_held: the figure to scale on.")
    pending: int = Field(description="Waiting in the queue for any worker.")
    delayed: int = Field(description="Waiting for their time (retries, delayed sends).")
    in_flight: int = Field(description="Fetched by a live worker: running or prefetched.")
    dead_held: int = Field(description="Held by workers whose heartbeat stopped; they return to the queue.")
    workers_holding: int = Field(description="Live workers holding messages.")
    desired_workers: int = Field(description="ceil(work_remaining ÷ worker_concurrency) within [min, max].")
    worker_concurrency: int
    min_workers: int
    max_workers: int


@router.get("", response_model=Scaling, summary="Work remaining and desired workers (KEDA metrics-api)")
def scaling(http: Request, caller: ScalingDep) -> Scaling:
    """Read from Dramatiq's keys on every call: cheap (one round trip per worker holding messages). Fleet-wide:
    an `admin` key, or the read-only `scaling` key made for KEDA (`sdq keys create --role scaling`)."""
    service, fleet = Deps.of(http).service, Fleet.of(http)
    work = read_work(service.store.client, fleet.queues, heartbeat_timeout_s=fleet.heartbeat_timeout_s)
    policy = fleet.policy
    return Scaling(
        queue=work.queue,
        work_remaining=work.work_remaining,
        pending=work.pending,
        delayed=work.delayed,
        in_flight=work.in_flight,
        dead_held=work.dead_held,
        workers_holding=work.live_workers,
        desired_workers=policy.desired(work.work_remaining),
        worker_concurrency=policy.worker_concurrency,
        min_workers=policy.min_workers,
        max_workers=policy.max_workers,
    )
