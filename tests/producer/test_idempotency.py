"""`Idempotency-Key` through the real API on a real Redis: retries return the first result, never a duplicate."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from producer.apikeys import KeyStore
from tests.support import make_app

pytestmark = pytest.mark.redis

JOB = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2}


def _headers(token: str, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": key}


def _messages(client: redis.Redis) -> int:
    return int(client.llen("dramatiq:sdq-generate"))


def test_a_retried_post_returns_the_same_job_and_enqueues_once(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _, token = KeyStore(redis_client).create("acme")
    with TestClient(make_app(redis_server, tmp_path)) as api:
        first = api.post("/v1/jobs", json=JOB, headers=_headers(token, "order-1"))
        # Same body, other formatting and key order: still the same request.
        again = api.post(
            "/v1/jobs",
            content=b'{"steps": 2, "height": 64, "width": 64,   "prompt": "a cat"}',
            headers={**_headers(token, "order-1"), "content-type": "application/json"},
        )
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
        assert again.json()["request"]["seed"] == first.json()["request"]["seed"]
        assert _messages(redis_client) == 1 and redis_client.zcard("sdq:jobs") == 1
        other = api.post("/v1/jobs", json=JOB, headers=_headers(token, "order-2"))
        assert other.json()["id"] != first.json()["id"]


def test_the_same_key_with_another_body_is_422(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    _, token = KeyStore(redis_client).create("acme")
    with TestClient(make_app(redis_server, tmp_path)) as api:
        api.post("/v1/jobs", json=JOB, headers=_headers(token, "k"))
        reused = api.post("/v1/jobs", json={**JOB, "prompt": "a dog"}, headers=_headers(token, "k"))
        assert reused.status_code == 422
        error = reused.json()["error"]
        assert error["code"] == "idempotency_key_reused" and error["fields"][0]["field"] == "Idempotency-Key"
        assert _messages(redis_client) == 1


def test_concurrent_retries_make_one_job(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    _, token = KeyStore(redis_client).create("acme")
    with TestClient(make_app(redis_server, tmp_path)) as api, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: api.post("/v1/jobs", json=JOB, headers=_headers(token, "race")), range(16)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert _messages(redis_client) == 1


def test_keys_are_scoped_per_tenant(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    keys = KeyStore(redis_client)
    _, acme = keys.create("acme")
    _, globex = keys.create("globex")
    with TestClient(make_app(redis_server, tmp_path)) as api:
        one = api.post("/v1/jobs", json=JOB, headers=_headers(acme, "shared")).json()
        two = api.post("/v1/jobs", json=JOB, headers=_headers(globex, "shared")).json()
    assert one["id"] != two["id"] and (one["tenant"], two["tenant"]) == ("acme", "globex")


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "tab\there"])
def test_malformed_keys_are_422(redis_server: str, redis_client: redis.Redis, tmp_path: Path, key: str) -> None:
    _, token = KeyStore(redis_client).create("acme")
    with TestClient(make_app(redis_server, tmp_path)) as api:
        response = api.post("/v1/jobs", json=JOB, headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})
    assert response.status_code == 422
    assert _messages(redis_client) == 0


def test_a_retried_batch_returns_the_same_batch(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    _, token = KeyStore(redis_client).create("acme")
    body = {"defaults": {"steps": 2}, "items": [{"prompt": f"p{i}"} for i in range(5)]}
    with TestClient(make_app(redis_server, tmp_path)) as api:
        first = api.post("/v1/batches", json=body, headers=_headers(token, "b1"))
        again = api.post("/v1/batches", json=body, headers=_headers(token, "b1"))
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"] and again.json()["job_ids"] == first.json()["job_ids"]
        assert again.headers["idempotent-replayed"] == "true"
        assert redis_client.llen("dramatiq:sdq-batch") == 5
        changed = api.post("/v1/batches", json={**body, "defaults": {"steps": 3}}, headers=_headers(token, "b1"))
        assert changed.status_code == 422 and changed.json()["error"]["code"] == "idempotency_key_reused"


def test_concurrent_batches_with_one_key_make_one_batch_and_none_waits_on_a_claim(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # The key is checked and set by the Lua step that writes the batch: no "in progress" claim exists to answer
    # 409 while another request works, or to dangle for a day after a process died between claim and write.
    _, token = KeyStore(redis_client).create("acme")
    body = {"items": [{"prompt": f"p{i}", "steps": 2} for i in range(50)]}
    with TestClient(make_app(redis_server, tmp_path)) as api, ThreadPoolExecutor(8) as pool:
        post = lambda _: api.post("/v1/batches", json=body, headers=_headers(token, "one-batch"))  # noqa: E731
        responses = list(pool.map(post, range(12)))
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses if r.status_code != 202]
    assert len({r.json()["id"] for r in responses}) == 1
    assert redis_client.llen("dramatiq:sdq-batch") == 50


def test_a_batch_refused_for_its_quota_leaves_its_key_free_for_the_retry(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _, token = KeyStore(redis_client).create("acme", max_queued_jobs=4)
    body = {"items": [{"prompt": f"p{i}", "steps": 2} for i in range(3)]}
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(make_app(redis_server, tmp_path)) as api:
        waiting = [api.post("/v1/jobs", json=JOB, headers=auth).json()["id"] for _ in range(2)]
        refused = api.post("/v1/batches", json=body, headers=_headers(token, "later"))
        assert refused.status_code == 429 and redis_client.llen("dramatiq:sdq-batch") == 0
        assert not redis_client.keys("sdq:idem:*")  # nothing claimed, nothing to dangle
        for job_id in waiting:
            assert api.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200
        retried = api.post("/v1/batches", json=body, headers=_headers(token, "later"))
        assert retried.status_code == 202 and redis_client.llen("dramatiq:sdq-batch") == 3
