"""Slow and hostile receivers cannot hold the sender: every attempt ends by one deadline, an attempt the time
limit kills is logged and retried, one endpoint gets at most N attempts at once, and a message can be redelivered
whenever no attempt of it is in flight. Real Redis, `sdq webhooks` in a thread, real HTTP receivers on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.broker import make_broker
from producer.jobs import WebhookEventType
from producer.webhooks.delivery import send_delivery
from producer.webhooks.log import Delivery, DeliveryLog, DeliveryState
from producer.webhooks.settings import WebhookSettings
from producer.webhooks.signing import new_secret
from producer.webhooks.worker import run_webhooks
from tests.support import wait_for
from tests.webhooks.receivers import receiver, slow_receiver

pytestmark = pytest.mark.redis

SECRET = new_secret()
QUEUE = "sdq-webhooks"


@contextmanager
def sender(redis_server: str, tmp_path: Path, time_limit_s: float | None = None, **fields: Any) -> Iterator[None]:
    """`sdq webhooks` running in this process until the block ends."""
    settings = WebhookSettings(
        redis_url=redis_server,
        data_dir=tmp_path,
        webhook_secrets=[SECRET],  # type: ignore[list-item]
        webhook_allow=["127.0.0.1/32"],
        webhook_jitter=0.0,
        **fields,
    )
    stop, ready = threading.Event(), threading.Event()
    kwargs: dict[str, Any] = {"stop": stop, "ready": ready}
    if time_limit_s is not None:
        kwargs["time_limit_s"] = time_limit_s
    thread = threading.Thread(target=run_webhooks, args=(settings,), kwargs=kwargs)
    thread.start()
    try:
        assert ready.wait(30)
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


def _post(client: redis.Redis, url: str, msg_id: str) -> None:
    """A pending message to `url` and the queue message of its first attempt (what the dispatcher does)."""
    DeliveryLog(client, ttl_s=600).create(msg_id, "job", WebhookEventType.JOB_SUCCEEDED, url, b'{"n": 1}')
    send_delivery(make_broker(client, heartbeat_timeout_s=60), QUEUE, msg_id)


def _settled(client: redis.Redis, msg_id: str, timeout_s: float = 30) -> Delivery:
    log = DeliveryLog(client, ttl_s=600)

    def done() -> Delivery | None:
        found = log.get(msg_id)
        return found if found is not None and found.state is not DeliveryState.PENDING else None

    return wait_for(done, timeout_s=timeout_s)


def test_a_trickling_receiver_hits_the_deadline_and_the_attempt_is_logged_failed_and_retried(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Each byte comes well within httpx's per-read timeout (1 s), so only an overall deadline can end the attempt.
    with (
        slow_receiver(trickles=1, byte_every_s=0.2) as got,
        sender(redis_server, tmp_path, webhook_timeout_s=1.0, webhook_retry_schedule_s=[0.0, 0.3]),
    ):
        _post(redis_client, got.url, "msg_trickle")
        delivery = _settled(redis_client, "msg_trickle")
    first, second = delivery.attempts
    assert delivery.state is DeliveryState.DELIVERED
    assert first.status_code is None and first.error is not None and "deadline" in first.error
    assert 900 <= first.duration_ms < 6000, first  # ended by the 1 s deadline, not by the 200 s trickle
    assert second.status_code == 200
    assert 1.2 <= got.requests[1].at - got.requests[0].at < 10  # deadline, then the schedule's 0.3 s (2 loaded cores)


def test_an_attempt_the_time_limit_kills_is_logged_failed_and_retried(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # A deadline longer than the time limit: the attempt is killed by Dramatiq's TimeLimit, mid-read.
    with (
        slow_receiver(trickles=1, byte_every_s=0.1) as got,
        sender(redis_server, tmp_path, time_limit_s=1.0, webhook_timeout_s=30.0, webhook_retry_schedule_s=[0.0, 0.3]),
    ):
        _post(redis_client, got.url, "msg_killed")
        delivery = _settled(redis_client, "msg_killed")
    first, second = delivery.attempts
    assert delivery.state is DeliveryState.DELIVERED
    assert first.status_code is None and first.error == "killed by the 1 s time limit"
    assert 900 <= first.duration_ms < 6000, first  # TimeLimit looks once a second (slack for 2 loaded cores)
    assert second.status_code == 200


def test_one_endpoint_gets_at_most_n_attempts_in_flight_and_the_rest_wait_their_turn(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    settings = {"webhook_threads": 6, "webhook_max_in_flight_per_endpoint": 2, "webhook_timeout_s": 5.0}
    with slow_receiver(hold_s=0.6) as slow, receiver() as fast, sender(redis_server, tmp_path, **settings):
        for n in range(6):
            _post(redis_client, slow.url + f"?n={n}", f"msg_slow_{n}")  # other paths, same endpoint
        slow.wait_for(2)
        started = time.monotonic()
        _post(redis_client, fast.url, "msg_fast")
        fast.wait_for(1, timeout_s=10)
        fast_s = time.monotonic() - started
        slowest = [_settled(redis_client, f"msg_slow_{n}") for n in range(6)]
    print(f"fast endpoint answered {fast_s * 1000:.0f} ms after submission beside a saturated slow one")
    assert slow.most_in_flight == 2
    assert len(slow.requests) == 6
    assert all(d.state is DeliveryState.DELIVERED and len(d.attempts) == 1 for d in slowest)  # deferred, not failed
    assert fast_s < 2.0  # the slow endpoint holds 2 of 6 threads, so others are not stuck behind it


def test_a_message_is_redelivered_after_a_killed_attempt_but_not_while_an_attempt_is_in_flight(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from tests.support import make_app

    log = DeliveryLog(redis_client, ttl_s=600)
    with (
        TestClient(make_app(redis_server, tmp_path, auth=False)) as http,
        slow_receiver(trickles=2, byte_every_s=0.1) as got,
        sender(redis_server, tmp_path, time_limit_s=1.0, webhook_timeout_s=30.0, webhook_retry_schedule_s=[0.0]),
    ):
        job = http.post("/v1/jobs", json={"prompt": "x", "width": 64, "height": 64}).json()
        msg_id = f"msg_{job['id']}_x"
        log.create(msg_id, job["id"], WebhookEventType.JOB_SUCCEEDED, got.url, b'{"n": 1}')
        send_delivery(make_broker(redis_client, heartbeat_timeout_s=60), QUEUE, msg_id)
        killed = _settled(redis_client, msg_id)
        assert killed.state is DeliveryState.FAILED and killed.attempts[0].error == "killed by the 1 s time limit"
        redeliver = f"/v1/jobs/{job['id']}/deliveries/{msg_id}/redeliver"
        assert http.post(redeliver).status_code == 202
        got.wait_for(2)
        wait_for(lambda: log.in_flight(msg_id), timeout_s=10)
        busy = http.post(redeliver)
        assert busy.status_code == 409, busy.text  # the second trickle is being read: not now
        assert "in flight" in busy.json()["error"]["message"]
        wait_for(lambda: not log.in_flight(msg_id), timeout_s=10)  # killed again by the time limit
        assert http.post(redeliver).status_code == 202
        delivered = wait_for(lambda: (d := log.get(msg_id)) and d.state is DeliveryState.DELIVERED and d)
    assert [a.status_code for a in delivered.attempts] == [None, None, 200]
    assert len(got.requests) == 3


def test_a_pending_message_can_be_redelivered_and_the_retry_it_had_scheduled_is_dropped(
    redis_client: redis.Redis,
) -> None:
    from producer.webhooks.delivery import Deliverer, RetryPolicy
    from producer.webhooks.keyring import Keyring
    from producer.webhooks.ssrf import UrlPolicy

    log = DeliveryLog(redis_client, ttl_s=600)
    sent: list[tuple[str, float, str | None]] = []
    deliverer = Deliverer(
        log,
        Keyring(redis_client, [SECRET]),
        UrlPolicy.from_entries(["127.0.0.1/32"]),
        RetryPolicy([0.0, 3600.0], jitter=0.0),
        lambda msg_id, delay_s=0.0, ticket=None: sent.append((msg_id, delay_s, ticket)),
        timeout_s=5,
    )
    with receiver([(500, {}), (200, {})]) as got:
        log.create("msg_p", "job", WebhookEventType.JOB_SUCCEEDED, got.url, b"{}")
        deliverer.deliver("msg_p")
        ((_, delay_s, scheduled),) = sent
        assert delay_s == 3600.0 and scheduled is not None  # a retry an hour from now
        lock = log.lock("msg_p", hold_s=5)
        assert lock  # an attempt in flight (its lock held): no redelivery
        assert log.reopen("msg_p") is None
        log.unlock("msg_p", lock)
        again = log.reopen("msg_p")  # pending but not in flight: allowed
        assert again is not None and again != scheduled
        deliverer.deliver("msg_p", scheduled)  # the hour-later retry arrives: stale, no attempt
        assert len(got.requests) == 1
        deliverer.deliver("msg_p", again)
        assert len(got.requests) == 2
    found = log.get("msg_p")
    assert found is not None and found.state is DeliveryState.DELIVERED
    assert [a.status_code for a in found.attempts] == [500, 200]


def test_an_attempts_outcome_and_the_end_of_its_lock_are_one_step(redis_client: redis.Redis) -> None:
    """A client that sees a delivery done may redeliver it at once: the attempt's record releases its in-flight
    lock in the same transaction. Before, the lock went a moment after the record, and a redelivery in between
    got 409 "has an attempt in flight" (seen in the suite: the SDK's redeliver right after `delivered`). And a lock
    is released only by the attempt that took it, never a later one's."""
    from producer.webhooks.log import DeliveryAttempt

    log = DeliveryLog(redis_client, ttl_s=600)
    log.create("msg_l", "job", WebhookEventType.JOB_SUCCEEDED, "https://example.com/hook", b"{}")
    first = log.lock("msg_l", hold_s=5)
    assert first and log.lock("msg_l", hold_s=5) is None  # one attempt at a time
    done = DeliveryAttempt(at=datetime.now(timezone.utc), status_code=200, duration_ms=1.0)
    log.record_attempt("msg_l", done, DeliveryState.DELIVERED, lock=first)
    assert not log.in_flight("msg_l")
    assert log.reopen("msg_l") is not None  # redelivered at once

    second = log.lock("msg_l", hold_s=5)
    assert second
    log.unlock("msg_l", first)  # the first attempt's late release, and its record: the second's lock stays
    log.record_attempt("msg_l", done, DeliveryState.DELIVERED, lock=first)
    assert log.in_flight("msg_l") and log.reopen("msg_l") is None
    log.unlock("msg_l", second)
    assert not log.in_flight("msg_l")
