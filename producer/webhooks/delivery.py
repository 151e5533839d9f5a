"""Sending one webhook message: vet the URL, sign, POST to the vetted address, log the attempt, schedule a retry.

The policy follows Standard Webhooks and cog's webhook sender: the `webhook-id` is the same on every attempt, a
fresh timestamp and signature are made for each; 2xx delivers; 3xx is a failure and is never followed; 410 Gone
disables the endpoint; anything else is retried on the schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
with jitter), waiting at least what `Retry-After` asks. `job.progress` is best effort: one attempt, no retry.

Every attempt ends by one deadline (`timeout_s`: connect, headers and body together; see transport.py), and the
actor's time limit is only a backstop for what the deadline cannot cut short (a hung DNS lookup): an attempt it
kills is logged as failed and retried like any other. At most `EndpointSlots.limit` attempts to one endpoint are in
flight; a message past the cap is deferred (sent again a moment later, no attempt made), never failed.

Which queue message may make the next attempt is decided by a ticket: each scheduled retry or redelivery carries
a fresh one, and a queue message with an older ticket (a retry scheduled before a redelivery, a doubled message)
is dropped, so a redelivery never adds a second schedule beside the first.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import dramatiq
import httpx
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import TimeLimitExceeded

from ..errors import WebhookUrlError
from ..jobs import WebhookEventType
from .inflight import EndpointSlots
from .keyring import Keyring
from .log import DeliveryAttempt, DeliveryLog, DeliveryState, new_ticket
from .signing import signed_headers
from .ssrf import Resolver, UrlPolicy, check_url, system_resolver
from .transport import PinnedTransport

log = logging.getLogger(__name__)

#: Name of the delivery actor on the webhook queue.
WEBHOOK_ACTOR = "deliver_webhook"
USER_AGENT = "sdqueue-webhooks/1"

#: Time an attempt may take past its deadline before the actor's time limit kills it (DNS, Redis).
TIME_LIMIT_GRACE_S = 30.0


class Send(Protocol):
    """Sends (or re-sends after a delay) the queue message that makes one delivery attempt."""

    def __call__(self, msg_id: str, delay_s: float = 0.0, ticket: str | None = None) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Delay before each attempt (the first is normally 0) with ± `jitter`, and the cap on `Retry-After`."""

    schedule_s: Sequence[float]
    jitter: float = 0.1
    max_retry_after_s: float = 36000.0

    def delay_s(self, index: int, retry_after_s: float | None, rng: random.Random) -> float | None:
        """Delay before attempt `index` (0-based), or None when the schedule is used up."""
        if index >= len(self.schedule_s):
            return None
        delay = self.schedule_s[index] * (1 + rng.uniform(-self.jitter, self.jitter))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_retry_after_s))
        return delay


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


@dataclass
class _Outcome:
    state: DeliveryState
    status_code: int | None = None
    error: str | None = None
    response: str = ""
    retry_after_s: float | None = None


class Deliverer:
    """Makes one delivery attempt of a message and decides what happens next. Never raises for a receiver's
    misbehaviour: every outcome is logged on the message (a webhook failure never fails a job)."""

    def __init__(
        self,
        deliveries: DeliveryLog,
        keyring: Keyring,
        policy: UrlPolicy,
        retry: RetryPolicy,
        send: Send,
        *,
        timeout_s: float = 10.0,
        resolver: Resolver = system_resolver,
        slots: EndpointSlots | None = None,
        time_limit_s: float | None = None,
        defer_s: float = 1.0,
    ) -> None:
        self.deliveries = deliveries
        self.keyring = keyring
        self.policy = policy
        self.retry = retry
        self.send = send
        self.timeout_s = timeout_s
        self.resolver = resolver
        self.slots = slots
        self.time_limit_s = timeout_s + TIME_LIMIT_GRACE_S if time_limit_s is None else time_limit_s
        self.defer_s = defer_s
        self._rng = random.Random()

    @property
    def hold_s(self) -> float:
        """How long an attempt's lock and endpoint slot outlive a sender killed mid-attempt."""
        return self.time_limit_s + 5.0

    def deliver(self, msg_id: str, ticket: str | None = None) -> None:
        """Attempt message `msg_id` if it is pending, `ticket` is its current one and no other attempt of it is in
        flight; defer it when its endpoint has no free slot."""
        lock = self.deliveries.lock(msg_id, hold_s=self.hold_s)
        if lock is None:
            return
        try:  # read under the lock: a redelivery (which changes the ticket) cannot slip in between
            fields = self.deliveries.fields(msg_id)
            current = fields.get("ticket", b"").decode() or None
            if not fields or fields.get("state") != DeliveryState.PENDING.value.encode() or current != ticket:
                return
            then = self._attempt_in_slot(msg_id, fields, ticket, lock)
        finally:  # mostly released already, with the attempt's record; this one releases only our own
            self.deliveries.unlock(msg_id, lock)
        if then is not None:  # after unlocking, so that even an immediate retry finds the message free
            self.send(msg_id, *then)

    def _attempt_in_slot(
        self, msg_id: str, fields: dict[str, bytes], ticket: str | None, lock: str
    ) -> tuple[float, str | None] | None:
        """The attempt inside a slot of its endpoint; returns (delay, ticket) of the next queue message, if any."""
        url = fields["url"].decode()
        if self.slots is not None and not self.slots.enter(url, msg_id, hold_s=self.hold_s):
            log.debug("webhook %s deferred: its endpoint has %d attempts in flight", msg_id, self.slots.limit)
            return self.defer_s * self._rng.uniform(0.5, 1.5), ticket
        try:
            return self._attempt(msg_id, fields, lock)
        finally:
            if self.slots is not None:
                self.slots.leave(url, msg_id)

    def _attempt(self, msg_id: str, fields: dict[str, bytes], lock: str) -> tuple[float, str] | None:
        """One attempt, logged (and its `lock` released with the record); returns the delay before the next one
        and its ticket (None: no retry)."""
        url, kind = fields["url"].decode(), WebhookEventType(fields["type"].decode())
        if self.deliveries.endpoint_disabled(url):
            self.deliveries.set_state(msg_id, DeliveryState.DISABLED)
            return None
        at, started = datetime.now(timezone.utc), time.perf_counter()
        try:
            outcome = self._post(msg_id, url, fields)
        except TimeLimitExceeded:  # raised into this thread by Dramatiq's TimeLimit: a failed attempt like any other
            outcome = _Outcome(DeliveryState.PENDING, error=f"killed by the {self.time_limit_s:g} s time limit")
        made = int(fields.get("attempts", b"0")) - int(fields.get("round_start", b"0")) + 1
        delay = None
        if outcome.state is DeliveryState.PENDING and kind is not WebhookEventType.JOB_PROGRESS:
            delay = self.retry.delay_s(made, outcome.retry_after_s, self._rng)
        if outcome.state is DeliveryState.PENDING and delay is None:
            outcome.state = DeliveryState.FAILED
        if outcome.state is DeliveryState.DISABLED:
            self.deliveries.disable_endpoint(url)
        attempt = DeliveryAttempt(
            at=at,
            status_code=outcome.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            error=outcome.error,
            response=outcome.response,
        )
        next_at = time.time() + delay if delay is not None else None
        ticket = new_ticket() if delay is not None else None
        self.deliveries.record_attempt(msg_id, attempt, outcome.state, next_at, ticket, lock=lock)
        where = url.split("?", 1)[0]  # a query string may carry the receiver's token: keep it out of logs
        log.info("webhook %s %s → %s (%s)", msg_id, where, outcome.state.value, outcome.status_code or outcome.error)
        return None if delay is None or ticket is None else (delay, ticket)

    def _post(self, msg_id: str, url: str, fields: dict[str, bytes]) -> _Outcome:
        try:
            target = check_url(url, self.policy, self.resolver)
        except WebhookUrlError as exc:
            return _Outcome(DeliveryState.BLOCKED, error=f"blocked by the SSRF guard: {exc}")
        key_id = fields.get("key_id", b"").decode() or None
        body = fields["body"]
        headers = {
            **signed_headers(self.keyring.secrets_for(key_id), msg_id, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        transport = PinnedTransport(target, deadline_s=self.timeout_s)
        try:
            with httpx.Client(transport=transport, timeout=self.timeout_s, follow_redirects=False) as client:
                response = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _Outcome(DeliveryState.PENDING, error=f"{type(exc).__name__}: {exc}"[:500])
        code, excerpt = response.status_code, response.text[:512]
        if 200 <= code < 300:
            return _Outcome(DeliveryState.DELIVERED, status_code=code, response=excerpt)
        if code == 410:
            return _Outcome(DeliveryState.DISABLED, status_code=code, error="410 Gone: endpoint disabled")
        error = f"HTTP {code}"
        if 300 <= code < 400:
            error = f"HTTP {code} redirect to {response.headers.get('location', '?')!r} not followed (a failure)"
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return _Outcome(DeliveryState.PENDING, code, error, excerpt, retry_after)


def delivery_message(queue: str, msg_id: str, ticket: str | None = None) -> Message[Any]:
    """The queue message that makes one attempt of webhook message `msg_id` (with the message's current ticket)."""
    args = (msg_id,) if ticket is None else (msg_id, ticket)
    return Message(queue_name=queue, actor_name=WEBHOOK_ACTOR, args=args, kwargs={}, options={})


def send_delivery(
    broker: RedisBroker, queue: str, msg_id: str, delay_s: float = 0.0, ticket: str | None = None
) -> None:
    """Enqueue an attempt of `msg_id` on the webhook queue, after `delay_s`."""
    broker.declare_queue(queue)
    broker.enqueue(delivery_message(queue, msg_id, ticket), delay=int(delay_s * 1000) or None)


def _retry_when(retries: int, exc: BaseException) -> bool:
    # Only Redis outages are retried by Dramatiq: the deliverer handles every receiver failure itself.
    return isinstance(exc, redis.RedisError) and retries < 20


def declare_deliver(broker: RedisBroker, deliverer: Deliverer, queue: str) -> dramatiq.Actor[Any, None]:
    """Register the delivery actor on `broker`."""

    def deliver_webhook(msg_id: str, ticket: str | None = None) -> None:
        deliverer.deliver(msg_id, ticket)

    decorate = dramatiq.actor(
        actor_name=WEBHOOK_ACTOR,
        queue_name=queue,
        broker=broker,
        retry_when=_retry_when,
        min_backoff=1_000,
        max_backoff=60_000,
        time_limit=max(1, int(deliverer.time_limit_s * 1000)),
    )
    return decorate(deliver_webhook)
