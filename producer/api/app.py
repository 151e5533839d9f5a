"""The FastAPI application."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from storage import ObjectStore

from ..service import JobService
from . import errors, files, health, jobs
from .deps import Deps
from .limits import BodyLimit


def create_app(service: JobService, objects: ObjectStore, *, url_expiry: timedelta) -> FastAPI:
    """The API over a job service and the object store its workers write to."""
    app = FastAPI(
        title="sdqueue",
        version="1",
        summary="Asynchronous text-to-image jobs on (spot) GPU workers.",
    )
    app.state.deps = Deps(service=service, objects=objects, url_expiry=url_expiry)
    errors.install(app)
    app.add_middleware(BodyLimit)
    app.include_router(jobs.router)
    app.include_router(files.router)
    app.include_router(health.router)
    return app
