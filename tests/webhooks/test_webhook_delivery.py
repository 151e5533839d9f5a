"""Delivery end to end inside one process: real Redis, the real Lua transitions a worker makes, the real
dispatcher and Dramatiq worker of `sdq webhooks` (in a thread), and real HTTP receivers on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from producer.broker import make_broker
from producer.jobs import JobRecord, JobRequest, JobStatus, Progress, WebhookEvent
from producer.service import JobService
from producer.store import JobStore
from producer.webhooks.dispatch import Dispatcher
from producer.webhooks.log import DeliveryLog, DeliveryState
from producer.webhooks.settings import WebhookSettings
from producer.webhooks.signing import new_secret
from producer.webhooks.ssrf import UrlPolicy
from producer.webhooks.worker import run_webhooks
from tests.webhooks.receivers import Received, receiver

pytestmark = pytest.mark.redis

SECRET = new_secret()
# The production schedule (0, 5 s, 5 min, …) scaled down to seconds, without jitter so the timings can be checked.
SCHEDULE_S = [0.0, 0.5, 1.0, 1.0]


@pytest.fixture
def sender(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[WebhookSettings]:
    """`sdq webhooks` running in this process (dispatcher + a real Dramatiq worker on the webhook queue)."""
    settings = WebhookSettings(
        redis_url=redis_server,
        data_dir=tmp_path,
        webhook_secrets=[SECRET],  # type: ignore[list-item]
        webhook_allow=["127.0.0.1/32"],
        webhook_retry_schedule_s=SCHEDULE_S,
        webhook_jitter=0.0,
        webhook_progress_interval_s=0.3,
        webhook_timeout_s=5.0,
    )
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run_webhooks, args=(settings,), kwargs={"stop": stop, "ready": ready})
    thread.start()
    assert ready.wait(30)
    yield settings
    stop.set()
    thread.join(timeout=30)


def _service(client: redis.Redis) -> JobService:
    broker = make_broker(client, heartbeat_timeout_s=60)
    policy = UrlPolicy.from_entries(["127.0.0.1/32"])
    return JobService(JobStore(client, ttl_s=600), broker, queue="q", default_model="tiny", url_policy=policy)


def _run_to(
    store: JobStore, record: JobRecord, status: JobStatus, on_step: Callable[[int], None] | None = None
) -> None:
    """What a GPU worker does to a job: claim it, report progress, settle it (the real Lua transitions)."""
    claim = store.claim(record.id, worker="test", lease_s=30, max_attempts=3)
    assert claim.outcome == "claimed"
    if on_step:
        for step in range(1, 41):
            store.touch(record.id, claim.attempt, lease_s=30, progress=Progress(step=step, total=40))
            on_step(step)
    assert store.settle(record.id, claim.attempt, status)


def _events(requests: list[Received]) -> list[WebhookEvent]:
    return [WebhookEvent.model_validate_json(r.body) for r in requests]


def test_each_transition_is_delivered_signed_and_verifies_with_the_reference_library(
    sender: WebhookSettings, redis_client: redis.Redis
) -> None:
    service = _service(redis_client)
    with receiver() as got:
        record = service.submit(JobRequest(prompt="a fox", webhook_url=got.url, metadata={"order": "7"}))
        _run_to(service.store, record, JobStatus.SUCCEEDED)
        settled = time.monotonic()
        requests = got.wait_for(2)
        time.sleep(0.5)  # nothing more may follow
    assert len(got.requests) == 2
    latency_s = max(r.at for r in requests) - settled
    print(f"delivery latency after settle: {latency_s * 1000:.0f} ms")
    for request in requests:
        parsed = Webhook(SECRET).verify(request.body, request.headers)  # the reference verifier
        assert parsed["id"] == request.headers["webhook-id"]
        assert request.headers["content-type"] == "application/json"
    events = sorted(_events(requests), key=lambda e: e.type.value != "job.started")
    assert [e.type.value for e in events] == ["job.started", "job.succeeded"]
    final = events[1].data
    assert isinstance(final, JobRecord) and final.id == record.id and final.status is JobStatus.SUCCEEDED
    assert final.request.metadata == {"order": "7"}
    assert latency_s < 10


def test_retries_follow_the_schedule_honour_retry_after_and_end_in_one_terminal_event(
    sender: WebhookSettings, redis_client: redis.Redis
) -> None:
    service = _service(redis_client)
    script = [(500, {}), (429, {"Retry-After": "2"}), (200, {})]
    with receiver(script) as got:
        record = service.submit(JobRequest(prompt="x", webhook_url=got.url, webhook_events=["job.succeeded"]))
        _run_to(service.store, record, JobStatus.SUCCEEDED)
        assert not service.store.settle(record.id, 1, JobStatus.FAILED)  # fenced: no second ending
        assert service.store.cancel(record.id) is JobStatus.SUCCEEDED  # nothing to cancel, no event
        first, second, third = got.wait_for(3, timeout_s=30)
        time.sleep(1.5)  # a fourth attempt would come within the schedule's next step (1 s)
    assert len(got.requests) == 3
    assert len({r.headers["webhook-id"] for r in got.requests}) == 1  # one message: stable id across retries
    assert len({r.headers["webhook-signature"] for r in got.requests}) >= 2  # fresh timestamp, fresh signature
    assert 0.4 <= second.at - first.at < 5  # schedule: 0.5 s after a 500
    assert 2.0 <= third.at - second.at < 8  # Retry-After: 2 beats the schedule's 1 s
    for request in got.requests:
        Webhook(SECRET).verify(request.body, request.headers)
    (delivery,) = DeliveryLog(redis_client, ttl_s=60).for_job(record.id)
    assert delivery.state is DeliveryState.DELIVERED
    assert [a.status_code for a in delivery.attempts] == [500, 429, 200]


def test_a_410_disables_the_endpoint_until_a_redelivery(sender: WebhookSettings, redis_client: redis.Redis) -> None:
    service = _service(redis_client)
    log = DeliveryLog(redis_client, ttl_s=60)
    with receiver([(410, {})]) as got:
        request = JobRequest(prompt="x", webhook_url=got.url, webhook_events=["job.succeeded", "job.failed"])
        first = service.submit(request)
        _run_to(service.store, first, JobStatus.SUCCEEDED)
        got.wait_for(1)
        second = service.submit(request)
        _run_to(service.store, second, JobStatus.FAILED)

        def second_logged() -> bool:
            found = log.for_job(second.id)
            return bool(found) and found[0].state is DeliveryState.DISABLED

        deadline = time.monotonic() + 30
        while not second_logged():
            assert time.monotonic() < deadline, "the second job's message was never marked disabled"
            time.sleep(0.05)
        assert len(got.requests) == 1  # nothing sent to a disabled endpoint
        assert log.for_job(first.id)[0].state is DeliveryState.DISABLED

        from producer.webhooks.delivery import send_delivery

        msg_id = log.for_job(second.id)[0].id
        ticket = log.reopen(msg_id)
        send_delivery(make_broker(redis_client, heartbeat_timeout_s=60), sender.webhook_queue, msg_id, ticket=ticket)
        (again,) = got.wait_for(2)[1:]
    assert json.loads(again.body)["type"] == "job.failed"
    Webhook(SECRET).verify(again.body, again.headers)


def test_progress_events_are_throttled_and_only_sent_when_asked_for(
    sender: WebhookSettings, redis_client: redis.Redis
) -> None:
    service = _service(redis_client)
    with receiver() as got, receiver() as quiet:
        wanted = ["job.progress", "job.succeeded"]
        record = service.submit(JobRequest(prompt="x", webhook_url=got.url, webhook_events=wanted))
        plain = service.submit(JobRequest(prompt="y", webhook_url=quiet.url))
        started = time.monotonic()
        _run_to(service.store, record, JobStatus.SUCCEEDED, on_step=lambda step: time.sleep(0.05))
        _run_to(service.store, plain, JobStatus.SUCCEEDED, on_step=lambda step: None)
        took_s = time.monotonic() - started
        quiet.wait_for(2)
        deadline = time.monotonic() + 30
        while not any(json.loads(r.body)["type"] == "job.succeeded" for r in got.requests):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
    kinds = [json.loads(r.body)["type"] for r in got.requests]
    progress = kinds.count("job.progress")
    assert kinds.count("job.succeeded") == 1 and "job.started" not in kinds
    assert 1 <= progress <= took_s / 0.3 + 2  # 40 steps reported, at most one event per 0.3 s
    assert sorted(json.loads(r.body)["type"] for r in quiet.requests) == ["job.started", "job.succeeded"]


def test_a_stream_entry_read_twice_makes_one_message(redis_client: redis.Redis) -> None:
    service = _service(redis_client)
    record = service.submit(JobRequest(prompt="x", webhook_url="http://127.0.0.1:9/hook"))
    assert service.cancel(record.id).status is JobStatus.CANCELED
    assert service.cancel(record.id).status is JobStatus.CANCELED  # again: no second transition
    entries = redis_client.xrange("sdq:events")
    assert [e[1][b"to"] for e in entries] == [b"canceled"]
    sent: list[str] = []
    log = DeliveryLog(redis_client, ttl_s=60)
    dispatcher = Dispatcher(redis_client, service.store, log, sent.append, consumer="t")
    entry_id, fields = entries[0]
    decoded = {k.decode(): v.decode() for k, v in fields.items()}
    first = dispatcher.handle(entry_id.decode(), decoded)
    redis_client.hset(f"sdq:wh:msg:{first}", "attempts", "1")  # as if its attempt had been made
    assert dispatcher.handle(entry_id.decode(), decoded) == first
    assert sent == [first] and len(log.for_job(record.id)) == 1


def test_a_job_without_a_webhook_writes_no_event(redis_client: redis.Redis) -> None:
    service = _service(redis_client)
    record = service.submit(JobRequest(prompt="x"))
    _run_to(service.store, record, JobStatus.SUCCEEDED, on_step=lambda step: None)
    assert redis_client.xlen("sdq:events") == 0 if redis_client.exists("sdq:events") else True


def test_a_batch_sends_one_batch_completed_event_to_its_key_default_endpoint(
    sender: WebhookSettings, redis_client: redis.Redis
) -> None:
    from producer.apikeys import KeyStore
    from producer.batches import BatchService
    from producer.jobs import BatchRequest
    from producer.store import Owner

    service = _service(redis_client)
    batches = BatchService(service, queue="b")
    with receiver() as got:
        key, _ = KeyStore(redis_client).create("acme", webhook_url=got.url)
        created, _ = batches.create(
            BatchRequest(items=[{"prompt": f"p{i}"} for i in range(3)], defaults={"width": 64, "height": 64}),
            owner=Owner(tenant="acme", key_id=key.id),
        )
        for job_id in created.job_ids:
            _run_to(service.store, service.store.get(job_id), JobStatus.SUCCEEDED)
        got.wait_for(7)  # per job: started + succeeded; then the batch
        time.sleep(0.5)
    kinds = [Webhook(key.outbound_secret).verify(r.body, r.headers)["type"] for r in got.requests]
    assert sorted(kinds) == ["batch.completed"] + ["job.started"] * 3 + ["job.succeeded"] * 3
    (batch,) = [json.loads(r.body) for r in got.requests if json.loads(r.body)["type"] == "batch.completed"]
    assert batch["data"]["id"] == created.id and batch["data"]["counts"]["succeeded"] == 3
