"""`GET /v1/models`: the model catalog, and which models some worker holds loaded or cached."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ..errors import QueueUnavailableError
from ..holdings import ModelList, list_models, read_holdings
from .auth import CallerDep
from .deps import Deps
from .errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)


@router.get("", response_model=ModelList, summary="List the models")
async def models(http: Request, caller: CallerDep) -> ModelList:
    """The catalog's models, with their defaults and limits, and whether a worker has each one loaded (a job for it
    starts at once) or cached on its disk (a load, no download), and the model a job naming none runs."""
    service = Deps.of(http).service
    try:
        holdings = await run_in_threadpool(read_holdings, service.store.client)
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"cannot read what the workers hold: {exc}") from exc
    return list_models(service.catalog, holdings, service.default_model)
