"""Who is calling: the `Authorization: Bearer sdq_…` key, its role, its tenant, and its request-rate limit.

With keys required, every /v1 route needs a live key; its tenant scopes what the caller sees (another tenant's
job or batch is a 404, never a 403 that would confirm it exists) and every request counts against the key's rate.
Its role decides which routes it may call at all (403 otherwise): `CallerDep` routes take `tenant` and `admin`
keys, `AdminDep` routes (fleet-wide views) only `admin`, `ScalingDep` (`GET /v1/scaling`) `admin` and `scaling`.
Open mode (a single user on loopback, the embedded default) has no keys and no tenant: the caller sees every job
and every view.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import redis
import redis.asyncio
from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from ..apikeys import ApiKey, KeyStore, Role
from ..errors import AuthenticationError, ForbiddenError, ProducerError
from ..ratelimit import Limits, RateLimiter
from ..settings import ApiSettings
from ..store import Owner

_BEARER = "An API key from `sdq keys create`: `sdq_<id>_<secret>`."
#: Where `KeyFirstRoute` leaves the caller it authenticated, in the request's scope.
_CALLER = "sdq.caller"


@dataclass(frozen=True)
class Caller:
    """The authenticated caller. `tenant` is None in open mode (no keys: every job is visible)."""

    key: ApiKey | None = None
    limits: Limits | None = None

    @property
    def tenant(self) -> str | None:
        return self.key.tenant if self.key else None

    @property
    def admin(self) -> bool:
        """Whether the caller may see fleet-wide data: an `admin` key, or open mode (no keys at all)."""
        return self.key is None or self.key.role is Role.ADMIN

    @property
    def owner(self) -> Owner:
        """Whom a new job belongs to, and the quota it counts against."""
        if self.key is None or self.limits is None:
            return Owner()
        return Owner(tenant=self.key.tenant, key_id=self.key.id, max_queued=self.limits.max_queued_jobs)


class Authenticator:
    """Turns a bearer token into a `Caller`; `keys=None` means open mode."""

    def __init__(self, keys: KeyStore | None, limiter: RateLimiter | None, defaults: Limits) -> None:
        self.keys = keys
        self.limiter = limiter
        self.defaults = defaults

    @property
    def required(self) -> bool:
        return self.keys is not None

    def authenticate(self, token: str | None) -> Caller:
        """The caller behind `token`; raises `AuthenticationError` or `RateLimitedError`."""
        if self.keys is None:
            return Caller()
        if not token:
            raise AuthenticationError("this server requires an API key: send `Authorization: Bearer sdq_…`")
        if self.limiter is not None:
            admitted = self.limiter.admit(token, self.defaults)  # the key check and the rate count in one call
            if admitted is None:
                raise AuthenticationError("invalid or revoked API key")
            return Caller(*admitted)
        key = self.keys.authenticate(token)
        if key is None:
            raise AuthenticationError("invalid or revoked API key")
        return Caller(key, Limits.of(key, self.defaults))


def bearer_token(request: Request) -> str | None:
    """The credentials of an `Authorization: Bearer …` header (as `HTTPBearer` reads them), else None."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    return credentials if scheme.lower() == "bearer" and credentials else None


async def current_caller(request: Request, token: str | None) -> Caller:
    """The caller of this request (401 without a valid key, 429 over its rate)."""
    authenticator: Authenticator = request.app.state.auth
    aclient: redis.asyncio.Redis | None = getattr(request.app.state, "aredis", None)
    if authenticator.keys is None or not token or authenticator.limiter is None:
        return authenticator.authenticate(token)  # no Redis call
    if aclient is None:
        return await run_in_threadpool(authenticator.authenticate, token)
    admitted = await authenticator.limiter.admit_async(aclient, token, authenticator.defaults)
    if admitted is None:
        raise AuthenticationError("invalid or revoked API key")
    return Caller(*admitted)


class KeyCheck(HTTPBearer):
    """A flat FastAPI dependency: the bearer token, the key check and the role check in one call (no chain of
    dependencies to solve on every request), documented in OpenAPI as the `HTTPBearer` scheme it extends.

    The caller, if its key has one of `roles` (open mode always passes), else 403."""

    def __init__(self, *roles: Role) -> None:
        super().__init__(auto_error=False, scheme_name="HTTPBearer", description=_BEARER)
        self.roles = frozenset(roles)
        #: `roles` as lua/submit.lua takes them (space-separated names).
        self.role_names = " ".join(sorted(role.value for role in roles))
        self._names = " or ".join(f"`{role.value}`" for role in roles)

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        caller = request.scope.get(_CALLER)  # already authenticated by `KeyFirstRoute`: one key check, one count
        if not isinstance(caller, Caller):
            caller = await current_caller(request, bearer_token(request))
        if caller.key is not None and caller.key.role not in self.roles:
            raise self.refused(caller.key.role)
        return caller

    def refused(self, role: Role) -> ForbiddenError:
        """The 403 for a key of `role`."""
        return ForbiddenError(f"this route needs a key with role {self._names}; this key's role is {role}")


#: Who may call the job and batch routes: a `tenant` or `admin` key.
CALLERS = KeyCheck(Role.TENANT, Role.ADMIN)
#: Use as a route parameter type: `caller: CallerDep` (a `tenant` or `admin` key: jobs, batches, their costs).
CallerDep = Annotated[Caller, Depends(CALLERS)]


class KeyFirstRoute(APIRoute):
    """A route taking a body that FastAPI parses (`POST /v1/jobs`, `POST /v1/uploads`) whose `CALLERS` check runs
    before the body is read. FastAPI reads and parses a declared body before it solves the route's dependencies,
    so a request without a valid key had its body read (up to the route's limit) and a malformed one was a 422,
    not a 401. The caller is left in the request's scope, where `CallerDep` finds it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def key_first(request: Request) -> Response:
            request.scope[_CALLER] = await CALLERS(request)
            return await handler(request)

        return key_first


#: Fleet-wide views (every tenant's data): `admin` keys only.
AdminDep = Annotated[Caller, Depends(KeyCheck(Role.ADMIN))]
#: `GET /v1/scaling`: `admin`, or the read-only `scaling` key KEDA holds.
ScalingDep = Annotated[Caller, Depends(KeyCheck(Role.ADMIN, Role.SCALING))]


def authenticator(settings: ApiSettings, client: redis.Redis) -> Authenticator:
    """The authenticator `settings` ask for; raises `ProducerError` for `SDQ_AUTH=open` off loopback."""
    try:
        required = settings.auth_required
    except ValueError as exc:
        raise ProducerError(str(exc)) from None
    defaults = Limits(settings.rate_limit_per_s, settings.rate_limit_burst, settings.max_queued_jobs)
    if not required:
        return Authenticator(None, None, defaults)
    return Authenticator(KeyStore(client), RateLimiter(client), defaults)
