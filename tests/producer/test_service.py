"""Submitting jobs: all or nothing, against a real Redis."""

from __future__ import annotations

import pytest
import redis

from producer import JobRequest, ModelNotAllowedError, QueueUnavailableError, WebhookUrlError, enqueue
from producer.broker import make_broker
from producer.service import JobService
from producer.settings import CommonSettings
from producer.store import JobStore
from tests.support import free_port

pytestmark = pytest.mark.redis


def _service(client: redis.Redis, broker_client: redis.Redis | None = None, **options: object) -> JobService:
    broker = make_broker(broker_client or client, heartbeat_timeout_s=60)
    return JobService(JobStore(client, ttl_s=60), broker, queue="q", default_model="tiny", **options)  # type: ignore[arg-type]


def _nothing_written(client: redis.Redis) -> bool:
    return client.zcard("sdq:jobs") == 0 and client.llen("dramatiq:q") == 0 and not client.keys("sdq:job:*")


def test_a_model_outside_the_allow_list_is_refused_before_anything_is_written(redis_client: redis.Redis) -> None:
    service = _service(redis_client, allowed_models=frozenset({"tiny"}))
    with pytest.raises(ModelNotAllowedError, match="org/other"):
        service.submit(JobRequest(prompt="x", model="org/other"))
    assert _nothing_written(redis_client)
    assert service.submit(JobRequest(prompt="x")).request.model == "tiny"  # the default model is allowed


def test_a_failed_enqueue_leaves_no_half_created_job(redis_client: redis.Redis) -> None:
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.5)  # nothing listens there
    service = _service(redis_client, broker_client=unreachable)
    with pytest.raises(QueueUnavailableError):
        service.submit(JobRequest(prompt="x"))
    assert _nothing_written(redis_client)


def test_a_webhook_url_is_recorded_and_its_job_feeds_the_webhook_stream(redis_client: redis.Redis) -> None:
    record = _service(redis_client).submit(JobRequest(prompt="x", webhook_url="https://example.com/hook"))
    assert record.request.webhook_url == "https://example.com/hook"
    assert record.warnings == []
    assert redis_client.hget(f"sdq:job:{record.id}", "hooks") == b"1"


def test_a_webhook_url_to_a_private_address_is_refused_before_anything_is_written(redis_client: redis.Redis) -> None:
    with pytest.raises(WebhookUrlError, match="link-local"):
        _service(redis_client).submit(JobRequest(prompt="x", webhook_url="https://169.254.169.254/latest"))
    assert _nothing_written(redis_client)


def test_direct_enqueue_next_to_redis(redis_server: str, redis_client: redis.Redis) -> None:
    settings = CommonSettings(redis_url=redis_server, queue="q")
    record = enqueue("a cat", settings=settings, width=64, height=64)
    assert record.status.value == "queued" and record.request.width == 64
    assert redis_client.llen("dramatiq:q") == 1
