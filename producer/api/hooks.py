"""`POST /v1/hooks/jobs`: jobs pushed by another system as Standard Webhooks messages, instead of API calls.

The signature is the authentication. With API keys, the sender names its key (`?key_id=`) and signs with that
key's inbound `whsec_…` secret (any live one during a rotation; never the outbound secret its webhook receivers
hold, so a receiver cannot submit jobs); the jobs then belong to the key's tenant and count against its limits. A
`scaling` key cannot submit (403, after its signature checked out, so the answer reveals nothing to a stranger).
Open mode (no keys) verifies against `SDQ_INBOUND_WEBHOOK_SECRETS`. A message is accepted once: its `webhook-id`
is remembered past the 5-minute timestamp tolerance, so a replay within or after the window is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from .. import keys
from ..batches import ReplayedError
from ..errors import InvalidInputError
from ..jobs import JobRecord, JobRequest
from ..ratelimit import Limits
from ..store import Owner
from ..webhooks.signing import TOLERANCE_S, SignatureError, verify
from .deps import Deps
from .errors import ERROR_RESPONSES, error_response

#: Jobs one inbound message may carry.
MAX_JOBS_PER_HOOK = 100
#: How long an accepted `webhook-id` is remembered: past the timestamp window on both sides, so no replay passes.
SEEN_TTL_S = int(2 * TOLERANCE_S + 60)

router = APIRouter(tags=["webhooks"], responses=ERROR_RESPONSES)
_JOBS = TypeAdapter(JobRequest | list[JobRequest])


@dataclass(frozen=True)
class HookConfig:
    """Webhook settings the API needs: inbound secrets (open mode) and the queue redeliveries go to."""

    inbound_secrets: tuple[str, ...] = ()
    webhook_queue: str = "sdq-webhooks"
    delivery_ttl_s: int = 8 * 24 * 3600

    @staticmethod
    def of(request: Request) -> HookConfig:
        config = getattr(request.app.state, "hooks", None)
        return config if isinstance(config, HookConfig) else HookConfig()


class HookAccepted(BaseModel):
    """The jobs an inbound message made, in the order it listed them."""

    webhook_id: str
    jobs: list[JobRecord] = Field(default_factory=list)


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@router.post(
    "/v1/hooks/jobs",
    status_code=202,
    response_model=HookAccepted,
    summary="Submit jobs as a signed webhook",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/JobRequest"},
                            {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/JobRequest"},
                                "minItems": 1,
                                "maxItems": MAX_JOBS_PER_HOOK,
                            },
                        ]
                    }
                }
            },
        }
    },
)
async def inbound(
    http: Request, key_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{16}$")] = None
) -> JSONResponse:
    """A job (or a list of up to 100) signed with the Standard Webhooks scheme. 401 on a bad, stale or missing
    signature, 409 when the `webhook-id` was already accepted; nothing is enqueued in either case."""
    try:
        # The sender first: a message naming no live key (or sent while inbound webhooks are off) is refused
        # before its body is read.
        sender = await run_in_threadpool(_secrets_and_owner, http, key_id)
        body = await http.body()
        return await run_in_threadpool(_accept, http, sender, body)
    except _Refused as refused:
        return error_response(refused.status, refused.code, str(refused))


def _accept(http: Request, sender: tuple[list[str], Owner, Any, _Refused | None], body: bytes) -> JSONResponse:
    secrets, owner, limit, refusal = sender
    try:
        msg_id = verify(secrets, dict(http.headers), body)
    except SignatureError as exc:
        raise _Refused(401, "invalid_signature", f"webhook signature rejected: {exc}") from exc
    if refusal is not None:
        raise refusal
    if limit is not None:
        limit()
    requests = _gated(http, _parse(body), owner, listed=body.lstrip()[:1] == b"[")
    deps = Deps.of(http)
    seen = keys.inbound_seen(f"{owner.key_id or '-'}:{msg_id}")
    # All the hook's jobs and its webhook-id in one atomic step: a delivery refused half-way (quota, Redis)
    # creates nothing, and the sender's retry of the same webhook-id goes through.
    try:
        job_ids = http.app.state.batches.create_jobs(requests, owner=owner, seen_key=seen, seen_ttl_s=SEEN_TTL_S)
    except ReplayedError as exc:
        detail = f" (it made job(s) {exc.job_ids})" if exc.job_ids else ""
        message = f"webhook-id {msg_id!r} was already accepted{detail}; nothing was enqueued"
        raise _Refused(409, "replayed", message) from None
    records: list[JobRecord] = deps.service.store.get_many(job_ids)
    accepted = HookAccepted(webhook_id=msg_id, jobs=records)
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202)


def _gated(http: Request, requests: list[JobRequest], owner: Owner, *, listed: bool) -> list[JobRequest]:
    """The jobs' image inputs checked and their data URLs stored as uploads, as `POST /v1/jobs` does; a bad one is
    a 422 naming the field (`<index>.<field>` in a list), with nothing enqueued."""
    gate = http.app.state.inputs
    memo: dict[Any, Any] = {}
    gated = []
    for index, request in enumerate(requests):
        try:
            gated.append(gate.prepare(request, owner.tenant or None, memo=memo))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{index}.{exc.field}" if listed else exc.field, exc.reason) from None
    return gated


def _secrets_and_owner(http: Request, key_id: str | None) -> tuple[list[str], Owner, Any, _Refused | None]:
    auth = getattr(http.app.state, "auth", None)
    if auth is not None and getattr(auth, "keys", None) is not None:
        key = auth.keys.get(key_id) if key_id else None
        if key is None or key.revoked:
            raise _Refused(401, "unauthenticated", "name a live API key with ?key_id=<id> (its secret signs the hook)")
        limits = Limits.of(key, auth.defaults)
        owner = Owner(tenant=key.tenant, key_id=key.id, max_queued=limits.max_queued_jobs)
        limit = (lambda: auth.limiter.check(key.id, limits)) if auth.limiter is not None else None
        refusal = None if key.role.submits else _Refused(403, "forbidden", f"a {key.role} key cannot submit jobs")
        return list(key.inbound_secrets), owner, limit, refusal
    secrets = list(HookConfig.of(http).inbound_secrets)
    if not secrets:
        raise _Refused(404, "not_found", "inbound webhooks are off: set SDQ_INBOUND_WEBHOOK_SECRETS to turn them on")
    return secrets, Owner(), None, None


def _parse(body: bytes) -> list[JobRequest]:
    try:
        data = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "invalid JSON"}]) from None
    except RecursionError:  # nesting past the parser's limit: the sender's problem, never a 500
        message = "JSON nested too deeply"
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": message}]) from None
    if isinstance(data, list) and not 1 <= len(data) <= MAX_JOBS_PER_HOOK:
        message = f"a hook carries 1–{MAX_JOBS_PER_HOOK} jobs (got {len(data)})"
        raise RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": message}])
    try:
        parsed = _JOBS.validate_python(data)
    except ValidationError as exc:
        # Report the errors of the shape the sender used (one job, or the list), not of both union members.
        errors = [e for e in exc.errors() if (e["loc"][:1] == ("list[JobRequest]",)) == isinstance(data, list)]
        for error in errors:
            error["loc"] = tuple(part for part in error["loc"] if part not in ("JobRequest", "list[JobRequest]"))
        raise RequestValidationError(errors or exc.errors()) from None
    return parsed if isinstance(parsed, list) else [parsed]
