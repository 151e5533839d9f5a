"""Liveness and readiness."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .deps import Deps

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Health check")
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
