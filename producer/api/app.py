"""The FastAPI application."""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import cached_property
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from storage import ObjectStore
from storage.signing import FILES_PATH

from ..batches import BatchService
from ..eta import Forecaster
from ..inputs.limits import InputLimits
from ..inputs.submission import InputGate
from ..inputs.uploads import Uploads
from ..ratelimit import Limits
from ..service import JobService
from ..streamslots import StreamLimits, StreamSlots
from ..webhooks.ssrf import UrlPolicy
from . import (
    batch_list,
    batches,
    costs,
    deliveries,
    errors,
    events,
    files,
    health,
    jobs,
    models,
    scaling,
    uploads,
    watch,
)
from . import fleet as fleet_api
from . import hooks as hooks_api
from .aredis import async_redis
from .auth import CALLERS, Authenticator
from .deps import Deps
from .hooks import HookConfig
from .keyed_submit import KeyedSubmit
from .limits import BodyLimit
from .mux import scripts_for
from .scaling import Fleet
from .submit_route import SUBMIT_PATH, SubmitLane
from .ui import router as ui_router


class SdqApi(FastAPI):
    """The app: FastAPI, with `lane` (api/submit_route.py) answering `POST /v1/jobs` in front of its whole stack.

    While FastAPI's own telemetry is on (an OpenTelemetry provider is configured), submissions take the whole
    stack and the general route instead (slower: FastAPI solves the route's parameters), so that they are traced
    and measured like every other request. So does an app mounted under a `root_path`."""

    lane: SubmitLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane
        if (
            lane is not None
            and scope["type"] == "http"
            and scope["path"] == SUBMIT_PATH
            and scope["method"] == "POST"
            and not self.root_path
            and not self._lane_telemetry.on()
        ):
            scope["app"] = self  # as Starlette sets it: `Request.app`
            await lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def whole(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The whole stack, to the route: what the lane declines, and every request while telemetry is on."""
        await super().__call__(scope, receive, send)

    @cached_property
    def _lane_telemetry(self) -> _Telemetry:
        return _Telemetry(getattr(self, "_native_telemetry", None))


class _Telemetry:
    """Whether FastAPI's native telemetry is on, asked at most once a second (the question costs 3 µs)."""

    def __init__(self, native: Any) -> None:
        self.native = native
        self._known = False
        self._until = 0.0

    def on(self) -> bool:
        if self.native is None:  # a FastAPI without native telemetry: nothing to bypass
            return False
        now = time.monotonic()
        if now >= self._until:
            self._known, self._until = bool(self.native.enabled()), now + 1.0
        return self._known


def create_app(
    service: JobService,
    objects: ObjectStore,
    *,
    url_expiry: timedelta,
    fleet: Fleet | None = None,
    auth: Authenticator | None = None,
    redis_url: str | None = None,
    batch_queue: str = "sdq-batch",
    max_batch_bytes: int = 64 * 1024 * 1024,
    hooks: HookConfig | None = None,
    inputs: InputLimits | None = None,
    input_url_policy: UrlPolicy | None = None,
    on_shutdown: Callable[[], None] | None = None,
    streams: StreamLimits | None = None,
) -> FastAPI:
    """The API over a job service and the object store its workers write to (`fleet`: scaling and prices).

    `auth` decides who may call it (default: open, no keys); batch jobs go to `batch_queue`. With `redis_url` (the
    Redis of `service`), the hot routes (submit, the key check) use an asyncio client: no thread hop per call.
    `inputs` limits image inputs and uploads, whose URLs must pass `input_url_policy` (default: https, public).
    `on_shutdown` runs after the server stops (closes what the app was built on, see `producer.api.factory`).
    `streams` bounds the event streams: how many per key, how long each (default `StreamLimits()`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Made in the server's event loop, which its connections belong to.
        app.state.aredis = async_redis(redis_url) if redis_url else None
        # The direct path of POST /v1/jobs: one multiplexed connection (api/mux.py).
        app.state.scripts = scripts_for(redis_url, app.state.aredis) if redis_url else None
        try:
            yield
        finally:
            if app.state.scripts is not None:
                await app.state.scripts.aclose()
            if app.state.aredis is not None:
                await app.state.aredis.aclose()
            app.state.aredis = app.state.scripts = None
            if on_shutdown is not None:
                on_shutdown()

    app = SdqApi(
        title="sdqueue",
        version="1",
        summary="Asynchronous text-to-image jobs on (spot) GPU workers.",
        lifespan=lifespan,
    )
    app.state.aredis = app.state.scripts = None
    app.state.fleet = fleet = fleet or Fleet.default(service, batch_queue=batch_queue)
    app.state.deps = Deps(
        service=service,
        objects=objects,
        url_expiry=url_expiry,
        costs=fleet.costs,
        forecaster=Forecaster(service.store.client),
    )
    app.state.stream_slots = StreamSlots(service.store.client, streams or StreamLimits())
    app.state.stream_hubs = weakref.WeakKeyDictionary()  # event loop → its StreamHub (streamhub.py)
    app.state.auth = auth = auth or Authenticator(None, None, Limits(0, 1, 0))
    app.state.keyed_submit = KeyedSubmit(CALLERS, auth.defaults)  # POST /v1/jobs in one Redis call
    app.state.hooks = hooks or HookConfig()
    app.state.batches = BatchService(service, queue=batch_queue, cost=fleet.costs)
    limits = inputs or InputLimits()
    app.state.inputs = InputGate(
        Uploads(service.store.client, objects, limits), limits, input_url_policy or UrlPolicy()
    )
    errors.install(app)
    # The direct path of POST /v1/jobs, in front of everything else (api/submit_route.py).
    app.lane = SubmitLane(app.whole, app.exception_handlers, max_bytes=limits.max_job_body_bytes)
    app.add_middleware(
        BodyLimit,
        per_path={"/v1/batches": max_batch_bytes, "/v1/jobs": limits.max_job_body_bytes},
        per_prefix={FILES_PATH: limits.max_upload_bytes},
    )
    jobs.install_submit(app)  # first: the hot route
    app.include_router(jobs.router)
    app.include_router(batch_list.router)  # before `batches`: GET /v1/batches, /v1/batches/{id}/items
    app.include_router(events.router)
    app.include_router(batches.router)
    app.include_router(deliveries.router)
    app.include_router(hooks_api.router)
    app.include_router(uploads.router)
    app.include_router(files.router)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(scaling.router)
    app.include_router(costs.router)
    app.include_router(fleet_api.router)
    app.include_router(watch.router)
    app.include_router(ui_router)  # the dashboard: /ui
    return app
