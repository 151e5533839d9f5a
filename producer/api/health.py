"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .deps import Deps

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Health(BaseModel):
    """`ok`, or `unavailable` with what is (never why: that is in the server's log)."""

    status: str
    redis: str | None = None


_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "Redis does not answer: not ready."}
}


@router.get("/healthz", summary="Health check", response_model=Health, responses=_UNAVAILABLE)
def healthz(http: Request) -> JSONResponse:
    """200 when Redis answers, 503 otherwise."""
    try:
        Deps.of(http).service.store.client.ping()
    except Exception as exc:  # any failure to reach Redis means not ready
        # The reason goes to the server's log only: its text names hosts, ports and paths an anonymous probe
        # has no business seeing.
        log.warning("healthz: redis unreachable: %s", exc)
        return JSONResponse({"status": "unavailable", "redis": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok"})
