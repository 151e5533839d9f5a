"""The delivery log: each webhook message, its state and every attempt, kept in Redis beside its job."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import datetime, timezone
from typing import Any, cast

import redis
from pydantic import BaseModel, ConfigDict

from .. import keys
from ..jobs import TextEnum, WebhookEventType

#: Attempts kept in a message's log (the newest; a message gets at most len(retry schedule) + redeliveries).
MAX_LOGGED_ATTEMPTS = 30
#: How long an endpoint that answered 410 Gone stays off (a redelivery turns it back on at once). Bounded, so the
#: marks of receivers nobody uses any more leave Redis by themselves.
DISABLED_TTL_S = 30 * 24 * 3600
_EXCERPT_CHARS = 512

# Create a message unless it exists: the dispatcher may see one stream entry twice (consumer-group redelivery),
# and the first write must win whole. Returns 1 when created, 0 when it already existed.
_CREATE = """
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV, 2 do redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call("EXPIRE", KEYS[1], ARGV[2])
redis.call("RPUSH", KEYS[2], ARGV[1])
redis.call("EXPIRE", KEYS[2], ARGV[2])
return 1
"""

# Reopen a finished (or stalled) message for a redelivery, unless an attempt of it is in flight: atomic with the
# lock, so a redelivery never races an attempt. A fresh ticket makes every queue message sent before it stale (a
# retry scheduled hours ahead must not add an attempt after the redelivery). Returns 1, or 0 while in flight.
_REOPEN = """
if redis.call("EXISTS", KEYS[1]) == 0 or redis.call("EXISTS", KEYS[2]) == 1 then return 0 end
redis.call("HSET", KEYS[1], "state", ARGV[1], "round_start", redis.call("HGET", KEYS[1], "attempts") or "0",
  "ticket", ARGV[2])
redis.call("HDEL", KEYS[1], "next_at")
redis.call("DEL", KEYS[3])
return 1
"""

# Release a message's in-flight lock if it is still this attempt's (its token): an attempt that outlived its lock
# must not free the lock of the attempt made after it. Returns 1 when released.
_UNLOCK = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""


class DeliveryState(TextEnum):
    """Where a webhook message stands."""

    PENDING = "pending"  # waiting for its first attempt or a retry
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every scheduled attempt failed (or a best-effort progress event failed once)
    DISABLED = "disabled"  # the endpoint answered 410 Gone, now or earlier: nothing more is sent to it
    BLOCKED = "blocked"  # the SSRF guard refused the URL


class DeliveryAttempt(BaseModel):
    """One try: when, what the receiver said (or the error), and how long it took."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    status_code: int | None = None
    duration_ms: float
    error: str | None = None
    response: str = ""


class Delivery(BaseModel):
    """A webhook message and its attempts, as `GET /v1/jobs/{id}/deliveries` reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    job_id: str
    type: WebhookEventType
    url: str
    state: DeliveryState
    created_at: datetime
    next_attempt_at: datetime | None = None
    attempts: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    """Every webhook message of one job, oldest first."""

    model_config = ConfigDict(frozen=True)

    deliveries: list[Delivery]


def endpoint_digest(url: str) -> str:
    """Short stable name of an endpoint (for the disabled-endpoint flag)."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


class DeliveryLog:
    """Reads and writes webhook messages in Redis."""

    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._create = client.register_script(_CREATE)
        self._reopen = client.register_script(_REOPEN)
        self._unlock = client.register_script(_UNLOCK)

    def create(self, msg_id: str, job_id: str, kind: WebhookEventType, url: str, body: bytes, **extra: str) -> bool:
        """Record a new pending message; False when `msg_id` exists already (nothing is changed then)."""
        fields: dict[str, str | bytes] = {
            "id": msg_id,
            "job_id": job_id,
            "type": kind.value,
            "url": url,
            "body": body,
            "state": DeliveryState.PENDING.value,
            "created_at": repr(time.time()),
            "attempts": "0",
            "log": "[]",
            **extra,
        }
        args: list[Any] = [msg_id, self.ttl_s, *(v for pair in fields.items() for v in pair)]
        return bool(self._create(keys=[keys.delivery(msg_id), keys.job_deliveries(job_id)], args=args))

    def fields(self, msg_id: str) -> dict[str, bytes]:
        """The raw fields of a message (empty when unknown)."""
        raw: dict[bytes, bytes] = self.client.hgetall(keys.delivery(msg_id))  # type: ignore[assignment]
        return {k.decode(): v for k, v in raw.items()}

    def get(self, msg_id: str) -> Delivery | None:
        """One message, or None."""
        fields = self.fields(msg_id)
        return _delivery(fields) if fields else None

    def for_job(self, job_id: str) -> list[Delivery]:
        """Every message of a job, oldest first."""
        ids: list[bytes] = self.client.lrange(keys.job_deliveries(job_id), 0, -1)  # type: ignore[assignment]
        pipe = self.client.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hgetall(keys.delivery(msg_id.decode()))
        return [_delivery({k.decode(): v for k, v in f.items()}) for f in pipe.execute() if f]

    def record_attempt(
        self,
        msg_id: str,
        attempt: DeliveryAttempt,
        state: DeliveryState,
        next_at: float | None = None,
        ticket: str | None = None,
        lock: str | None = None,
    ) -> int:
        """Append an attempt and set the message's state; returns how many attempts it has had. `ticket` is the
        one the queue message of the next attempt carries (every older one is stale from now on). `lock`: the
        attempt's in-flight lock, released in the same step, so that nobody sees the outcome while the message
        still looks in flight (a redelivery asked right after a delivery is seen done would be refused)."""
        log = json.loads(cast(bytes, self.client.hget(keys.delivery(msg_id), "log")) or b"[]")
        log = [*log, attempt.model_dump(mode="json")][-MAX_LOGGED_ATTEMPTS:]
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(keys.delivery(msg_id), "attempts", 1)
        pipe.hset(keys.delivery(msg_id), mapping={"log": json.dumps(log), "state": state.value})
        if next_at is None:
            pipe.hdel(keys.delivery(msg_id), "next_at")
        else:
            pipe.hset(keys.delivery(msg_id), "next_at", repr(next_at))
        if ticket is not None:
            pipe.hset(keys.delivery(msg_id), "ticket", ticket)
        if lock is not None:
            self._unlock(keys=[keys.delivery_lock(msg_id)], args=[lock], client=pipe)
        return int(pipe.execute()[0])

    def set_state(self, msg_id: str, state: DeliveryState) -> None:
        """Change a message's state without an attempt (e.g. skipped because its endpoint is disabled)."""
        self.client.hset(keys.delivery(msg_id), mapping={"state": state.value})
        self.client.hdel(keys.delivery(msg_id), "next_at")

    def reopen(self, msg_id: str) -> str | None:
        """Make a message pending again for a redelivery, and re-enable its endpoint (an explicit user action).

        Returns the ticket the redelivery's queue message must carry; None while an attempt is in flight (or for
        an unknown message)."""
        url = cast(bytes | None, self.client.hget(keys.delivery(msg_id), "url")) or b""
        ticket = new_ticket()
        # The retry schedule starts over from this attempt on (`round_start`); the log keeps counting.
        key_names = [
            keys.delivery(msg_id),
            keys.delivery_lock(msg_id),
            keys.disabled_endpoint(endpoint_digest(url.decode())),
        ]
        done = self._reopen(keys=key_names, args=[DeliveryState.PENDING.value, ticket])
        return ticket if done else None

    def in_flight(self, msg_id: str) -> bool:
        """Whether an attempt of the message is being made now (its in-flight lock is held)."""
        return bool(self.client.exists(keys.delivery_lock(msg_id)))

    def disable_endpoint(self, url: str) -> None:
        """Stop sending to `url` (it answered 410 Gone) for `DISABLED_TTL_S`."""
        self.client.set(keys.disabled_endpoint(endpoint_digest(url)), repr(time.time()), ex=DISABLED_TTL_S)

    def endpoint_disabled(self, url: str) -> bool:
        """Whether `url` answered 410 Gone before."""
        return bool(self.client.exists(keys.disabled_endpoint(endpoint_digest(url))))

    def lock(self, msg_id: str, hold_s: float) -> str | None:
        """Take the in-flight lock of a message (one attempt at a time, even if its queue message is doubled);
        returns its token (for `unlock`), or None while another attempt holds it."""
        token = secrets.token_hex(8)
        taken = self.client.set(keys.delivery_lock(msg_id), token, nx=True, px=max(1, int(hold_s * 1000)))
        return token if taken else None

    def unlock(self, msg_id: str, token: str) -> None:
        """Release the in-flight lock taken with `token` (not a later attempt's, should this one have outlived
        it)."""
        self._unlock(keys=[keys.delivery_lock(msg_id)], args=[token])


def new_ticket() -> str:
    """A fresh ticket: the token that marks which queue message may make a message's next attempt."""
    return secrets.token_hex(8)


def _time(value: bytes | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=timezone.utc) if value else None


def _delivery(f: dict[str, bytes]) -> Delivery:
    created = _time(f["created_at"])
    assert created is not None
    return Delivery(
        id=f["id"].decode(),
        job_id=f["job_id"].decode(),
        type=WebhookEventType(f["type"].decode()),
        url=f["url"].decode(),
        state=DeliveryState(f["state"].decode()),
        created_at=created,
        next_attempt_at=_time(f.get("next_at")),
        attempts=[DeliveryAttempt.model_validate(a) for a in json.loads(f.get("log") or b"[]")],
    )
