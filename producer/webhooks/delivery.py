"""Sending one webhook message: vet the URL, sign, POST to the vetted address, log the attempt, schedule a retry.

The policy follows Standard Webhooks and cog's webhook sender: the `webhook-id` is the same on every attempt, a
fresh timestamp and signature are made for each; 2xx delivers; 3xx is a failure and is never followed; 410 Gone
disables the endpoint; anything else is retried on the schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
with jitter), waiting at least what `Retry-After` asks. `job.progress` is best effort: one attempt, no retry.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import dramatiq
import httpx
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from ..errors import WebhookUrlError
from ..jobs import WebhookEventType
from .keyring import Keyring
from .log import DeliveryAttempt, DeliveryLog, DeliveryState
from .signing import signed_headers
from .ssrf import Resolver, UrlPolicy, check_url, system_resolver
from .transport import PinnedTransport

log = logging.getLogger(__name__)

#: Name of the delivery actor on the webhook queue.
WEBHOOK_ACTOR = "deliver_webhook"
USER_AGENT = "sdqueue-webhooks/1"

#: Sends (or re-sends after a delay) the queue message that makes one delivery attempt.
Send = Callable[[str, float], None]


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
    ) -> None:
        self.deliveries = deliveries
        self.keyring = keyring
        self.policy = policy
        self.retry = retry
        self.send = send
        self.timeout_s = timeout_s
        self.resolver = resolver
        self._rng = random.Random()

    def deliver(self, msg_id: str) -> None:
        """Attempt message `msg_id` if it is still pending and no other attempt of it is in flight."""
        fields = self.deliveries.fields(msg_id)
        if not fields or fields.get("state") != DeliveryState.PENDING.value.encode():
            return
        if not self.deliveries.lock(msg_id, hold_s=self.timeout_s * 4 + 30):
            return
        try:
            delay_s = self._attempt(msg_id, fields)
        finally:
            self.deliveries.unlock(msg_id)
        if delay_s is not None:  # after unlocking, so that even an immediate retry finds the message free
            self.send(msg_id, delay_s)

    def _attempt(self, msg_id: str, fields: dict[str, bytes]) -> float | None:
        """One attempt, logged; returns the delay before the next one (None: no retry)."""
        url, kind = fields["url"].decode(), WebhookEventType(fields["type"].decode())
        if self.deliveries.endpoint_disabled(url):
            self.deliveries.set_state(msg_id, DeliveryState.DISABLED)
            return None
        at, started = datetime.now(timezone.utc), time.perf_counter()
        outcome = self._post(msg_id, url, fields)
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
        self.deliveries.record_attempt(msg_id, attempt, outcome.state, next_at)
        where = url.split("?", 1)[0]  # a query string may carry the receiver's token: keep it out of logs
        log.info("webhook %s %s → %s (%s)", msg_id, where, outcome.state.value, outcome.status_code or outcome.error)
        return delay

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
        transport = PinnedTransport(target)
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


def delivery_message(queue: str, msg_id: str) -> Message[Any]:
    """The queue message that makes one attempt of webhook message `msg_id`."""
    return Message(queue_name=queue, actor_name=WEBHOOK_ACTOR, args=(msg_id,), kwargs={}, options={})


def send_delivery(broker: RedisBroker, queue: str, msg_id: str, delay_s: float = 0.0) -> None:
    """Enqueue an attempt of `msg_id` on the webhook queue, after `delay_s`."""
    broker.declare_queue(queue)
    broker.enqueue(delivery_message(queue, msg_id), delay=int(delay_s * 1000) or None)


def _retry_when(retries: int, exc: BaseException) -> bool:
    # Only Redis outages are retried by Dramatiq: the deliverer handles every receiver failure itself.
    return isinstance(exc, redis.RedisError) and retries < 20


def declare_deliver(broker: RedisBroker, deliverer: Deliverer, queue: str) -> dramatiq.Actor[Any, None]:
    """Register the delivery actor on `broker`."""

    def deliver_webhook(msg_id: str) -> None:
        deliverer.deliver(msg_id)

    decorate = dramatiq.actor(
        actor_name=WEBHOOK_ACTOR,
        queue_name=queue,
        broker=broker,
        retry_when=_retry_when,
        min_backoff=1_000,
        max_backoff=60_000,
        time_limit=int((deliverer.timeout_s * 4 + 60) * 1000),
    )
    return decorate(deliver_webhook)
