"""A keyed `POST /v1/jobs` in one Redis call: the key check, its request rate, its role and the job's create.

The general route makes two round trips: the key check (`RateLimiter.admit_async`: the key, its revocation, its
token, its rate) and then the create (lua/create.lua). lua/submit.lua runs the same two steps in one atomic call
(`sdq_admit` of ratelimit.py, then `sdq_create` of lua/_create.lua), with the key's tenant and quota read from the
key inside it, so a submission is one round trip. What it answers is what the two steps answered: 401 for an
unknown, revoked or wrong token, 429 over the key's rate (the request is counted, as before) or its quota, 403 for
a key whose role may not submit, the Idempotency-Key's replay or conflict.
"""

from __future__ import annotations

from typing import Any

import redis

from .. import jobhash, keys
from ..apikeys import Role, token_digest
from ..errors import AuthenticationError, QueueUnavailableError, write_failed
from ..ratelimit import ADMIT_LUA, GCRA_LUA, Limits, admitted
from ..scripts import lua_script
from ..service import NewJob
from ..store import Created, Idempotency, create_call, create_refusal
from .auth import KeyCheck
from .mux import Scripts

_SOURCE = lua_script("submit", helpers=("_create",), inline=GCRA_LUA + ADMIT_LUA)
_CREATE = lua_script("create", helpers=("_create",))


class KeyedSubmit:
    """Runs lua/submit.lua for the keys `check` admits, under the server's default `defaults`."""

    def __init__(self, check: KeyCheck, defaults: Limits) -> None:
        self.check = check
        self.defaults = defaults

    async def submit(
        self,
        scripts: Scripts,
        key_id: str,
        token: str,
        new: NewJob,
        idempotency: Idempotency | None,
    ) -> Created:
        """Admit `token` (of key `key_id`) and record and enqueue `new` (prepared with its message) for its tenant;
        raises `AuthenticationError`, `RateLimitedError`, `ForbiddenError`, `QuotaExceededError`,
        `IdempotencyConflictError` or `QueueUnavailableError`, as the two separate steps do."""
        call = create_call(new.job_id, new.request, (), None, idempotency, new.message, None)
        job, _, queue, msgs = call.keys  # the Idempotency-Key's name needs the tenant: the script makes it
        defaults = self.defaults
        args: list[Any] = [
            token_digest(token),
            defaults.rate_per_s,
            max(defaults.burst, 1),
            defaults.max_queued_jobs,
            self.check.role_names,
            idempotency.key if idempotency else "",
            *call.args,
        ]
        try:
            answer = await scripts.run(_SOURCE, [keys.api_key(key_id), keys.rate(key_id), job, queue, msgs], args)
        except redis.RedisError as exc:
            raise write_failed(exc) from exc
        if not answer:
            raise AuthenticationError("invalid or revoked API key")
        outcome = jobhash.text(answer[0])
        if outcome == "limited":  # the key's fields, as the key check alone answers them
            admitted([answer[1], 0, answer[2]], defaults)
        if outcome == "forbidden":
            raise self.check.refused(Role(jobhash.text(answer[1])))
        return await _created(scripts, new, call.fields, answer)

    async def create(self, scripts: Scripts, new: NewJob, idempotency: Idempotency | None) -> Created:
        """Record and enqueue `new` with no owner (open mode: no keys), lua/create.lua on the same connection."""
        call = create_call(new.job_id, new.request, (), None, idempotency, new.message, None)
        try:
            answer = await scripts.run(_CREATE, call.keys, call.args)
        except redis.RedisError as exc:
            raise write_failed(exc) from exc
        return await _created(scripts, new, call.fields, [*answer, ""])


async def _created(scripts: Scripts, new: NewJob, fields: dict[str, str], answer: list[Any]) -> Created:
    """The job lua/_create.lua answered for: {"created", seq, place in line, tenant} (the record built from what
    was written), {"existing", id} (read back), or the error of a refusal."""
    outcome, detail = jobhash.text(answer[0]), jobhash.text(answer[1])
    if outcome == "created":
        rank, tenant = jobhash.text(answer[2]), jobhash.text(answer[3])
        return Created(jobhash.fresh_record(fields, new.resolved(), tenant=tenant, rank=int(rank)), created=True)
    if outcome == "existing":  # rare: a retried request; read the first job's record
        try:
            raw = await scripts.hgetall(keys.job(detail))
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"the job store is unreachable: {exc}") from exc
        return Created(jobhash.record(jobhash.decode(raw)), created=False)
    raise create_refusal(outcome, detail)
