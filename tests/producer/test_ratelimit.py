"""Per-key request rate (429 + Retry-After) and queued-jobs quota, through the real API on a real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from producer.apikeys import KeyStore
from producer.errors import RateLimitedError
from producer.ratelimit import Limits, RateLimiter
from tests.support import make_app

pytestmark = pytest.mark.redis

JOB = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _queued_messages(client: redis.Redis) -> int:
    return int(client.llen("dramatiq:sdq-generate")) + int(client.llen("dramatiq:sdq-batch"))


def test_over_the_rate_gets_429_with_retry_after_then_recovers(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _, token = KeyStore(redis_client).create("acme", rate_per_s=1, burst=3)
    with TestClient(make_app(redis_server, tmp_path)) as api:
        codes = [api.get("/v1/jobs", headers=_auth(token)).status_code for _ in range(3)]
        refused = api.get("/v1/jobs", headers=_auth(token))
        assert codes == [200, 200, 200]
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 2
        time.sleep(retry_after)
        assert api.get("/v1/jobs", headers=_auth(token)).status_code == 200


def test_keys_have_separate_budgets_shared_across_api_processes(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    keys = KeyStore(redis_client)
    _, busy = keys.create("acme", rate_per_s=0.5, burst=2)
    _, quiet = keys.create("acme", rate_per_s=0.5, burst=2)
    # Two app instances stand for two API replicas: the budget lives in Redis, not in a process.
    with TestClient(make_app(redis_server, tmp_path)) as one, TestClient(make_app(redis_server, tmp_path)) as two:
        assert one.get("/v1/jobs", headers=_auth(busy)).status_code == 200
        assert two.get("/v1/jobs", headers=_auth(busy)).status_code == 200
        assert one.get("/v1/jobs", headers=_auth(busy)).status_code == 429
        assert two.get("/v1/jobs", headers=_auth(busy)).status_code == 429
        assert two.get("/v1/jobs", headers=_auth(quiet)).status_code == 200


def test_server_default_rate_applies_to_keys_without_their_own(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _, token = KeyStore(redis_client).create("acme")
    with TestClient(make_app(redis_server, tmp_path, rate_per_s=0.5, burst=1)) as api:
        assert api.get("/v1/jobs", headers=_auth(token)).status_code == 200
        assert api.get("/v1/jobs", headers=_auth(token)).status_code == 429


def test_gcra_admits_the_sustained_rate(redis_client: redis.Redis) -> None:
    limiter, limits = RateLimiter(redis_client), Limits(rate_per_s=20, burst=1, max_queued_jobs=0)
    admitted, started = 0, time.monotonic()
    while time.monotonic() - started < 1.0:
        try:
            limiter.check("k1", limits)
            admitted += 1
        except RateLimitedError as exc:
            assert 0 < exc.retry_after_s <= 0.05 + 1e-6
        time.sleep(0.005)
    assert 18 <= admitted <= 22


def test_queued_jobs_quota_refuses_with_429_and_enqueues_nothing(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    keys = KeyStore(redis_client)
    _, token = keys.create("acme", max_queued_jobs=2)
    _, other = keys.create("acme")
    with TestClient(make_app(redis_server, tmp_path, max_queued_jobs=1000)) as api:
        first = api.post("/v1/jobs", json=JOB, headers=_auth(token)).json()
        api.post("/v1/jobs", json=JOB, headers=_auth(token))
        before = _queued_messages(redis_client), redis_client.zcard("sdq:jobs")
        refused = api.post("/v1/jobs", json=JOB, headers=_auth(token))
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
        assert int(refused.headers["retry-after"]) >= 1
        batch = api.post("/v1/batches", json={"items": [JOB]}, headers=_auth(token))
        assert batch.status_code == 429
        assert (_queued_messages(redis_client), redis_client.zcard("sdq:jobs")) == before
        # The quota is the key's, not the tenant's; and a job that leaves the queue frees a slot.
        assert api.post("/v1/jobs", json=JOB, headers=_auth(other)).status_code == 202
        api.post(f"/v1/jobs/{first['id']}/cancel", headers=_auth(token))
        assert api.post("/v1/jobs", json=JOB, headers=_auth(token)).status_code == 202


def test_a_batch_larger_than_the_quota_left_is_refused_whole(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _, token = KeyStore(redis_client).create("acme", max_queued_jobs=10)
    with TestClient(make_app(redis_server, tmp_path)) as api:
        assert api.post("/v1/batches", json={"items": [JOB] * 8}, headers=_auth(token)).status_code == 202
        refused = api.post("/v1/batches", json={"items": [JOB] * 3}, headers=_auth(token))
        assert refused.status_code == 429 and "quota" in refused.json()["error"]["message"]
        assert api.post("/v1/batches", json={"items": [JOB] * 2}, headers=_auth(token)).status_code == 202


def test_a_wrong_secret_does_not_spend_the_keys_budget(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    key, token = KeyStore(redis_client).create("acme", rate_per_s=0.5, burst=1)
    forged = f"sdq_{key.id}_{'x' * 43}"
    with TestClient(make_app(redis_server, tmp_path)) as api:
        for _ in range(5):
            assert api.get("/v1/jobs", headers=_auth(forged)).status_code == 401
        assert api.get("/v1/jobs", headers=_auth(token)).status_code == 200
