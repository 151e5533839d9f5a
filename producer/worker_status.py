"""What each worker says about itself (`GET /v1/fleet/workers`): its GPU's utilization and memory, and its idle timer.

A worker writes its status every few seconds (`gpu_worker.middleware.status`) as one JSON string with a TTL of
about three report intervals, and adds its id to a sorted set scored by when that report expires; a worker that
dies stops being listed on its own. Readers drop the expired ids first, so the set stays as small as the fleet.

The figures are what the worker measured, never guessed: on a CPU worker (or where NVML cannot see the GPU) the
GPU fields are null and `gpu_reason` says why.
"""

from __future__ import annotations

import time

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import keys


class WorkerStatus(BaseModel):
    """One worker's last report, as `GET /v1/fleet/workers` lists it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The worker id (SDQ_WORKER_ID): what job records name as `worker`.")
    hostname: str
    instance_type: str = Field(description="SDQ_INSTANCE_TYPE, `unknown` where it was not set.")
    device: str = Field(description="The device jobs run on: `cuda:0`, `cpu`, `mps`.")
    gpu_name: str | None = Field(default=None, description="The GPU's name as NVML reports it; null without one.")
    gpu_reason: str | None = Field(default=None, description="Why there are no GPU figures (a CPU worker, no NVML).")
    utilization_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Share of NVML's last sample period in which a kernel ran."
    )
    memory_used_bytes: int | None = Field(default=None, ge=0, description="GPU memory in use (every process).")
    memory_total_bytes: int | None = Field(default=None, ge=0)
    jobs_running: int = Field(ge=0, description="Job messages its threads are running now.")
    idle_s: float = Field(ge=0, description="Seconds since its last job ended (or it booted); 0 while busy.")
    retires_in_s: float | None = Field(
        default=None, ge=0, description="Seconds until its idle timeout retires it; null when it never retires."
    )
    report_s: float = Field(gt=0, description="Seconds between its reports.")
    updated_at: float = Field(description="Unix seconds of this report.")


class WorkerList(BaseModel):
    """`GET /v1/fleet/workers`: the workers whose last report is still fresh, by id."""

    model_config = ConfigDict(frozen=True)

    workers: list[WorkerStatus]


def report_status(client: redis.Redis, status: WorkerStatus, *, ttl_s: float) -> None:
    """Record `status` for the next `ttl_s` seconds (a worker calls it every `status.report_s`)."""
    expires = time.time() + ttl_s
    with client.pipeline(transaction=False) as pipe:
        pipe.set(keys.worker_status(status.id), status.model_dump_json(), px=max(1, int(ttl_s * 1000)))
        pipe.zadd(keys.WORKER_STATUSES, {status.id: expires})
        pipe.execute()


def clear_status(client: redis.Redis, worker_id: str) -> None:
    """Forget `worker_id`'s status (it is stopping)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker_status(worker_id))
        pipe.zrem(keys.WORKER_STATUSES, worker_id)
        pipe.execute()


def read_statuses(client: redis.Redis) -> WorkerList:
    """Every worker's fresh report, by id (expired ids are dropped from the set first)."""
    client.zremrangebyscore(keys.WORKER_STATUSES, "-inf", time.time())
    members: list[bytes | str] = client.zrange(keys.WORKER_STATUSES, 0, -1)  # type: ignore[assignment]
    ids = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
    raw: list[bytes | None] = client.mget([keys.worker_status(i) for i in ids]) if ids else []  # type: ignore[assignment]
    found = []
    for value in raw:
        if value is None:
            continue
        try:
            found.append(WorkerStatus.model_validate_json(value))
        except ValidationError:  # a report of another version: leave it out rather than fail the page
            continue
    return WorkerList(workers=found)
