"""No terminal event is lost: `sdq webhooks` stopped while 200 000 progress events flood in, then every terminal
event delivered exactly once when it returns. Real Redis, the real Lua transitions a worker makes, the real
dispatcher and Dramatiq worker of `sdq webhooks` (in a thread), a real HTTP receiver on loopback."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from producer import keys
from producer.broker import make_broker
from producer.jobs import JobRequest, JobStatus, Progress, WebhookEvent
from producer.service import JobService
from producer.store import JobStore
from producer.webhooks.dispatch import GROUP, Dispatcher
from producer.webhooks.log import DeliveryLog
from producer.webhooks.settings import WebhookSettings
from producer.webhooks.signing import new_secret
from producer.webhooks.ssrf import UrlPolicy
from producer.webhooks.worker import run_webhooks
from tests.webhooks.receivers import receiver

pytestmark = pytest.mark.redis

FLOOD = 200_000


@contextmanager
def webhooks_running(redis_url: str, data_dir: Path) -> Iterator[None]:
    """`sdq webhooks` (dispatcher + delivery worker) in a thread of this process, stopped on exit."""
    settings = WebhookSettings(
        redis_url=redis_url,
        data_dir=data_dir,
        webhook_secrets=[new_secret()],  # type: ignore[list-item]
        webhook_allow=["127.0.0.1/32"],
        webhook_progress_interval_s=0.3,
        webhook_timeout_s=5.0,
    )
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run_webhooks, args=(settings,), kwargs={"stop": stop, "ready": ready})
    thread.start()
    try:
        assert ready.wait(30)
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def _service(client: redis.Redis) -> JobService:
    broker = make_broker(client, heartbeat_timeout_s=60)
    policy = UrlPolicy.from_entries(["127.0.0.1/32"])
    return JobService(JobStore(client, ttl_s=600), broker, queue="q", default_model="tiny", url_policy=policy)


def test_after_an_outage_with_a_progress_flood_every_terminal_event_arrives_exactly_once(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    service = _service(redis_client)
    store = service.store
    with receiver() as got:
        with webhooks_running(redis_server, tmp_path):
            pass  # it ran once (its consumer group exists), then went down
        expected: dict[str, str] = {}
        for n in range(60):  # terminal events written first, so that the flood comes after them
            record = service.submit(JobRequest(prompt=f"job {n}", webhook_url=got.url))
            if n % 3 == 2:
                store.cancel(record.id)
                expected[record.id] = "job.canceled"
                continue
            claim = store.claim(record.id, worker="test", lease_s=60, max_attempts=3)
            status = JobStatus.SUCCEEDED if n % 3 == 0 else JobStatus.FAILED
            assert store.settle(record.id, claim.attempt, status)
            expected[record.id] = f"job.{status.value}"
        events = ["job.progress", "job.succeeded"]
        flood = JobRequest(prompt="flood", webhook_url=got.url, webhook_events=events)
        flooders = [service.submit(flood) for _ in range(4)]
        attempts = {r.id: store.claim(r.id, worker="test", lease_s=600, max_attempts=3).attempt for r in flooders}
        started = time.perf_counter()
        per_job, chunk = FLOOD // len(flooders), 2_000
        for offset in range(0, per_job, chunk // len(flooders)):
            leases = [
                (job_id, attempt, 600.0, Progress(step=offset + i, total=per_job))
                for i in range(chunk // len(flooders))
                for job_id, attempt in attempts.items()
            ]
            store.touch_many(leases)  # one pipelined round trip per 2 000 progress events
        print(f"{FLOOD} progress events written in {time.perf_counter() - started:.1f} s")
        for job_id, attempt in attempts.items():
            assert store.settle(job_id, attempt, JobStatus.SUCCEEDED)
            expected[job_id] = "job.succeeded"
        progress_len = int(redis_client.xlen(keys.PROGRESS_EVENTS))
        assert progress_len < FLOOD  # the progress lane is capped …
        assert int(redis_client.xlen(keys.EVENTS)) >= len(expected)  # … the state changes are all still there

        # Every terminal event, and the `job.started` of each job that ran (flooders ask for none): deliveries run
        # on several threads, so a job's started event may land after its terminal one.
        ran = sum(1 for kind in expected.values() if kind != "job.canceled") - len(attempts)
        with webhooks_running(redis_server, tmp_path):
            deadline = time.monotonic() + 120
            while (
                sum(1 for r in list(got.requests) if _type(r.body) in _TERMINAL) < len(expected)
                or sum(1 for r in list(got.requests) if _type(r.body) == "job.started") < ran
            ):
                assert time.monotonic() < deadline, f"{len(got.requests)} requests after 120 s"
                time.sleep(0.1)
            time.sleep(1.0)  # nothing more may follow
            requests = list(got.requests)
    delivered = [WebhookEvent.model_validate_json(r.body) for r in requests]
    terminal = Counter((e.data.id, e.type.value) for e in delivered if e.type.value in _TERMINAL)  # type: ignore[union-attr]
    assert terminal == Counter(expected.items())  # each job's one terminal event, exactly once
    assert not [e for e in delivered if e.type.value == "job.progress"]  # its job had ended: not sent late
    started_ids = Counter(e.data.id for e in delivered if e.type.value == "job.started")  # type: ignore[union-attr]
    assert all(count == 1 for count in started_ids.values())
    assert set(started_ids) == {job_id for job_id, kind in expected.items() if kind != "job.canceled"} - set(attempts)


_TERMINAL = {"job.succeeded", "job.failed", "job.canceled"}


def _type(body: bytes) -> str:
    return WebhookEvent.model_validate_json(body).type.value


def _dispatcher(client: redis.Redis) -> Dispatcher:
    store = JobStore(client, ttl_s=600)
    return Dispatcher(
        client, store, DeliveryLog(client, ttl_s=600), lambda msg_id: None, consumer="me", claim_idle_ms=0
    )


def test_the_state_stream_is_trimmed_only_below_what_the_group_acknowledged(redis_client: redis.Redis) -> None:
    dispatcher = _dispatcher(redis_client)
    dispatcher.ensure_group()
    ids = [redis_client.xadd(keys.EVENTS, {"job_id": f"gone{n}", "to": "succeeded", "at": "1"}) for n in range(3)]
    redis_client.xreadgroup(GROUP, "dead", {keys.EVENTS: ">"}, count=2)  # a dispatcher read two, then died
    later = redis_client.xadd(keys.EVENTS, {"job_id": "gone3", "to": "succeeded", "at": "1"})
    assert dispatcher.trim() == ids[0].decode()  # the oldest pending entry stays, and all after it
    assert redis_client.xlen(keys.EVENTS) == 4
    assert dispatcher.reclaim() == 2  # taken over and acknowledged (the records are gone: skipped, not sent)
    dispatcher.trim()
    assert [e[0] for e in redis_client.xrange(keys.EVENTS)] == [ids[1], ids[2], later]  # never read: kept
    assert dispatcher.poll() == 2
    dispatcher.trim()
    assert [e[0] for e in redis_client.xrange(keys.EVENTS)] == [later]  # the last delivered id itself is kept
    assert redis_client.xpending(keys.EVENTS, GROUP)["pending"] == 0


def test_pending_progress_entries_whose_message_was_trimmed_leave_the_pending_list(redis_client: redis.Redis) -> None:
    dispatcher = _dispatcher(redis_client)
    dispatcher.ensure_group()
    for n in range(5):
        redis_client.xadd(keys.PROGRESS_EVENTS, {"job_id": f"j{n}", "to": "progress", "at": "1"})
    redis_client.xreadgroup(GROUP, "dead", {keys.PROGRESS_EVENTS: ">"}, count=5)
    redis_client.xtrim(keys.PROGRESS_EVENTS, maxlen=0)  # the cap pushed them out before anyone acknowledged them
    assert redis_client.xpending(keys.PROGRESS_EVENTS, GROUP)["pending"] == 5
    dispatcher.reclaim()
    assert redis_client.xpending(keys.PROGRESS_EVENTS, GROUP)["pending"] == 0
