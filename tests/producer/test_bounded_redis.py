"""Redis stays bounded: once finished records expire, the janitor's sweep takes them out of every index without
anyone listing a page, and no key is left without a TTL or a live owner. Real Redis, the real Lua scripts."""

from __future__ import annotations

import time

import pytest
import redis

from producer.batches import BatchService
from producer.broker import make_broker
from producer.controller.janitor import Janitor
from producer.jobs import BatchRequest, JobRequest, JobStatus
from producer.service import JobService
from producer.store import JobStore, Owner
from producer.webhooks.log import DeliveryLog

pytestmark = pytest.mark.redis


def _request(prompt: str) -> JobRequest:
    return JobRequest(prompt=prompt, width=64, height=64, steps=2)


def test_expired_jobs_and_batches_leave_every_index_and_no_key_is_left_without_a_ttl_or_an_owner(
    redis_client: redis.Redis,
) -> None:
    client = redis_client
    store = JobStore(client, ttl_s=1)
    broker = make_broker(client, heartbeat_timeout_s=60)
    service = JobService(store, broker, queue="sdq-generate", default_model="tiny")
    batches = BatchService(service, queue="sdq-batch")
    acme, open_mode = Owner(tenant="acme", key_id="k1"), Owner()
    done, failed, canceled, live = (service.submit(_request(p), owner=acme) for p in ("a", "b", "c", "d"))
    anonymous = service.submit(_request("e"), owner=open_mode)
    for record, status in ((done, JobStatus.SUCCEEDED), (failed, JobStatus.FAILED), (anonymous, JobStatus.SUCCEEDED)):
        attempt = store.claim(record.id, worker="w", lease_s=30, max_attempts=3).attempt
        assert store.settle(record.id, attempt, status)
    store.cancel(canceled.id)
    batch, _ = batches.create(BatchRequest(items=[{"prompt": "x"}, {"prompt": "y"}]), owner=acme)
    for job_id in batch.job_ids:
        store.cancel(job_id)
    DeliveryLog(client, ttl_s=600).disable_endpoint("http://127.0.0.1:9/gone")  # a receiver that answered 410
    finished = {done.id, failed.id, canceled.id, anonymous.id, *batch.job_ids}

    time.sleep(2.2)  # every finished record has expired by now; nothing lists a page
    janitor = Janitor(store, broker, queue="sdq-generate", max_attempts=3, lease_grace_s=30, lost_message_grace_s=3600)
    report = janitor.sweep()
    assert report.unindexed == len(finished) + 1  # the jobs, and the batch in its tenant's batch index

    indexes = [k for k in client.scan_iter("sdq:*") if client.type(k) == b"zset"]
    assert indexes, "the live job is still indexed"
    for index in indexes:
        members = {m.decode() for m in client.zrange(index, 0, -1)}
        assert members <= {live.id}, (index, members & finished)
    # Every key left has a TTL, or is owned by something live: the queued job (its record, indexes and message),
    # its API key's queued count, the queues, the sequence.
    owned = {b"sdq:seq", b"sdq:apikey:k1:queued_count", f"sdq:job:{live.id}".encode()}
    for key in client.scan_iter("*"):
        if client.ttl(key) != -1 or key in owned or key.startswith(b"dramatiq:"):
            continue
        assert client.type(key) == b"zset" and client.zrange(key, 0, -1) == [live.id.encode()], key
    assert report.unindexed and janitor.sweep().unindexed == 0  # the sweep's cost is what expired since
