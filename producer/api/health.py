"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .deps import Deps

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Health check")
def healthz(http: Request) -> JSONResponse:
    """200 when Redis answers, 503 otherwise."""
    try:
        Deps.of(http).service.store.client.ping()
    except Exception as exc:  # any failure to reach Redis means not ready
        return JSONResponse({"status": "unavailable", "redis": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok"})
