"""What the workers hold, and the catalog seen through it (`GET /v1/models`, `sdq models`).

Every worker reports, on its heartbeat clock, the models loaded on its device (by the names jobs used) and the
sources installed in its machine's model cache: one hash per worker that expires after a heartbeat timeout, so a
worker that died stops counting by itself. A catalog model is *loaded* where a worker holds it by its name, and
*cached* where its source sits in a worker's model cache.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis
from pydantic import BaseModel, ConfigDict, Field

from . import keys
from .catalog import Catalog, ModelDefaults, ModelLimits
from .jobs import Family


@dataclass(frozen=True)
class Holdings:
    """One worker's models: `loaded` on its device (the names jobs used), `cached` on its disk (their sources)."""

    loaded: tuple[str, ...] = ()
    cached: tuple[str, ...] = ()


def report_holdings(client: redis.Redis, worker_id: str, holdings: Holdings, *, ttl_s: float) -> None:
    """Record what `worker_id` holds for the next `ttl_s` seconds (a worker calls it on its heartbeat clock)."""
    expires = time.time() + ttl_s
    fields = {
        "loaded": json.dumps(holdings.loaded),
        "cached": json.dumps(holdings.cached),
        "expires": repr(expires),
    }
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(keys.worker_holdings(worker_id), mapping=fields)  # type: ignore[arg-type]
        pipe.pexpire(keys.worker_holdings(worker_id), max(1, int(ttl_s * 1000)))
        pipe.zadd(keys.WORKER_HOLDINGS, {worker_id: expires})
        pipe.execute()


def clear_holdings(client: redis.Redis, worker_id: str) -> None:
    """Forget what `worker_id` holds (it is stopping)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker_holdings(worker_id))
        pipe.zrem(keys.WORKER_HOLDINGS, worker_id)
        pipe.execute()


def read_holdings(client: redis.Redis) -> dict[str, Holdings]:
    """What every live worker holds, by worker id (reports past their expiry are dropped)."""
    client.zremrangebyscore(keys.WORKER_HOLDINGS, "-inf", time.time())
    members: list[bytes | str] = client.zrange(keys.WORKER_HOLDINGS, 0, -1)  # type: ignore[assignment]
    workers = [_text(member) for member in members]
    with client.pipeline(transaction=False) as pipe:
        for worker in workers:
            pipe.hmget(keys.worker_holdings(worker), ["loaded", "cached"])
        answers = pipe.execute()
    found = {}
    for worker, (loaded, cached) in zip(workers, answers, strict=True):
        if loaded is not None:
            found[worker] = Holdings(tuple(json.loads(loaded)), tuple(json.loads(cached or "[]")))
    return found


class ModelInfo(BaseModel):
    """One catalog model as `GET /v1/models` lists it: what it is, its defaults and limits, and where it is."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: str
    family: Family
    description: str = ""
    refiner: bool = Field(default=False, description="An SDXL refiner: only a job's `refiner.model`.")
    defaults: ModelDefaults
    limits: ModelLimits
    controlnets: dict[str, str] = Field(
        default_factory=dict, description="The ControlNets it takes, by the name a job's `controlnets[].model` gives."
    )
    ip_adapters: dict[str, str] = Field(
        default_factory=dict, description="The IP-Adapters it takes, by the name a job's `ip_adapter.model` gives."
    )
    loaded: bool = Field(description="Some worker has it on its device: a job for it starts without loading.")
    cached: bool = Field(description="Some worker's machine has it on disk: a load, but no download.")
    loaded_workers: int = 0
    cached_workers: int = 0


class ModelList(BaseModel):
    """`GET /v1/models`: the catalog, in its order."""

    model_config = ConfigDict(frozen=True)

    models: list[ModelInfo]
    default_model: str | None = Field(default=None, description="The model a job that names none runs.")


def list_models(catalog: Catalog, holdings: dict[str, Holdings], default_model: str | None = None) -> ModelList:
    """The catalog with, per model, how many live workers hold it loaded and cached; `default_model` is the
    server's `SDQ_DEFAULT_MODEL`."""
    models = []
    for name, entry in catalog.models.items():
        loaded = sum(name in held.loaded for held in holdings.values())
        cached = sum(entry.source in held.cached or name in held.loaded for held in holdings.values())
        models.append(
            ModelInfo(
                name=name,
                source=entry.source,
                family=entry.family,
                description=entry.description,
                refiner=entry.refiner,
                defaults=entry.defaults,
                limits=entry.limits,
                controlnets=entry.controlnets,
                ip_adapters=entry.ip_adapters,
                loaded=loaded > 0,
                cached=cached > 0,
                loaded_workers=loaded,
                cached_workers=cached,
            )
        )
    return ModelList(models=models, default_model=default_model)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
