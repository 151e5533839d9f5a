"""Enqueueing without the HTTP API, for code that sits next to Redis (a cron job, a data pipeline)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .catalog import load_catalog
from .jobs import JobRecord, JobRequest
from .runtime import open_backends
from .service import JobService
from .settings import CommonSettings


@contextmanager
def connect(settings: CommonSettings) -> Iterator[JobService]:
    """A `JobService` on the Redis that `settings` name (the embedded one when `redis_url` is unset)."""
    catalog = load_catalog(settings.model_catalog)
    with open_backends(settings) as backends:
        yield JobService(
            backends.store, backends.broker, queue=settings.queue, default_model=settings.default_model, catalog=catalog
        )


def enqueue(request: JobRequest | str, *, settings: CommonSettings, **fields: Any) -> JobRecord:
    """Record and enqueue one job: a `JobRequest`, or a prompt plus `JobRequest` fields."""
    job = request if isinstance(request, JobRequest) else JobRequest(prompt=request, **fields)
    with connect(settings) as service:
        return service.submit(job)
