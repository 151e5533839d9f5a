"""`GET /v1/batches`: the caller's batches, newest first; `GET /v1/batches/{id}/items`: all of a batch's jobs.

A tenant's batches are read from its index (`keys.tenant_batches`). Open mode (one user on loopback) keeps no
index of batches, so there the list comes from a SCAN of the batch hashes, sorted by creation: fine for a local
stack, and the reason tenants get an index.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from .. import keys
from ..batches import BatchService
from ..errors import BatchNotFoundError
from ..jobs import MAX_BATCH_ITEMS, BatchRecord, JobRecord, is_job_id
from .auth import CallerDep
from .deps import Deps
from .errors import ERROR_RESPONSES
from .params import QueryInt

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=ERROR_RESPONSES)

#: Batch hashes a SCAN in open mode looks at, at most (the keyspace is walked in steps of this many).
_SCAN_COUNT = 1000


class BatchPage(BaseModel):
    """One page of `GET /v1/batches`; pass `next_cursor` back as `cursor` for the next page."""

    model_config = ConfigDict(frozen=True)

    batches: list[BatchRecord]
    next_cursor: str | None = Field(default=None, description="Creation time (unix s) to continue below.")


class BatchItems(BaseModel):
    """A page of a batch's jobs in item order, whatever their status; pass `next_offset` back as `offset`."""

    model_config = ConfigDict(frozen=True)

    jobs: list[JobRecord]
    next_offset: int | None = None


def _service(http: Request) -> BatchService:
    service: BatchService = http.app.state.batches
    return service


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _batch_ids(service: BatchService, tenant: str | None, below: float | None, limit: int) -> list[tuple[str, float]]:
    client = service.client
    upper = f"({below}" if below is not None else "+inf"
    if tenant is not None:
        rows: list[tuple[bytes, float]] = client.zrevrangebyscore(  # type: ignore[assignment]
            keys.tenant_batches(tenant), upper, "-inf", start=0, num=limit, withscores=True
        )
        return [(_text(member), float(score)) for member, score in rows]
    prefix = keys.batch("")
    found: list[tuple[str, float]] = []
    pipe = client.pipeline(transaction=False)
    names = [_text(k) for k in client.scan_iter(match=prefix + "*", count=_SCAN_COUNT, _type="HASH")]
    names = [n for n in names if is_job_id(n[len(prefix) :])]
    for name in names:
        pipe.hget(name, "created_at")
    for name, created in zip(names, pipe.execute(), strict=True):
        if created is not None and (below is None or float(created) < below):
            found.append((name[len(prefix) :], float(created)))
    return sorted(found, key=lambda row: row[1], reverse=True)[:limit]


def _page(service: BatchService, tenant: str | None, cursor: str | None, limit: int) -> BatchPage:
    rows = _batch_ids(service, tenant, float(cursor) if cursor else None, limit + 1)
    batches = []
    for batch_id, _ in rows[:limit]:
        try:
            batches.append(service.get(batch_id, tenant=tenant))
        except BatchNotFoundError:  # expired between the index read and now
            continue
    more = len(rows) > limit
    return BatchPage(batches=batches, next_cursor=repr(rows[limit - 1][1]) if more else None)


@router.get("", response_model=BatchPage, summary="List batches")
async def list_batches(
    http: Request,
    caller: CallerDep,
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,12}(\.\d{1,9})?$")] = None,
) -> BatchPage:
    """The caller's batches newest first, with counts, progress and cost so far; follow `next_cursor`."""
    return await run_in_threadpool(_page, _service(http), caller.tenant, cursor, limit)


@router.get("/{batch_id}/items", response_model=BatchItems, summary="All jobs of a batch, in item order")
def items(
    batch_id: str,
    http: Request,
    caller: CallerDep,
    offset: Annotated[QueryInt, Query(ge=0, le=MAX_BATCH_ITEMS)] = 0,
    limit: Annotated[QueryInt, Query(ge=1, le=200)] = 50,
) -> BatchItems:
    """The batch's jobs from `offset` on, whatever their status (the finished ones: `GET …/jobs`)."""
    service = _service(http)
    if not is_job_id(batch_id):
        raise BatchNotFoundError(batch_id)
    # 404 for an unknown batch or another tenant's (one HMGET: not the whole record, whose cost reads every job).
    found, owner = service.client.hmget(keys.batch(batch_id), ["id", "tenant"])
    if found is None or (caller.tenant is not None and _text(owner or b"") != caller.tenant):
        raise BatchNotFoundError(batch_id)
    raw: list[bytes] = service.client.lrange(keys.batch_jobs(batch_id), offset, offset + limit - 1)  # type: ignore[assignment]
    ids = [_text(i) for i in raw]
    deps = Deps.of(http)
    jobs = [deps.with_urls(job) for job in service.jobs.store.get_many(ids, price=deps.pricer())]
    return BatchItems(jobs=jobs, next_offset=offset + len(ids) if len(ids) == limit else None)
