"""Batches through the real API on a real Redis: formats, all-or-nothing validation, counts, feed, cancel, tenants.

No worker here: job transitions are made with the store's own Lua steps (claim, settle), the ones workers use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from producer.apikeys import KeyStore
from producer.broker import BATCH_ACTOR
from producer.jobs import MAX_BATCH_ITEMS, JobStatus
from producer.store import JobStore
from tests.support import make_app

pytestmark = pytest.mark.redis

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture
def token(redis_client: redis.Redis) -> str:
    return KeyStore(redis_client).create("acme")[1]


@pytest.fixture
def api(redis_server: str, redis_client: redis.Redis, tmp_path: Path, token: str) -> Iterator[TestClient]:
    with TestClient(make_app(redis_server, tmp_path), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def _state(client: redis.Redis) -> tuple[int, int, int]:
    return (
        int(client.llen("dramatiq:sdq-batch")),
        int(client.hlen("dramatiq:sdq-batch.msgs")),
        int(client.zcard("sdq:jobs")),
    )


def test_object_body_with_defaults(api: TestClient, redis_client: redis.Redis) -> None:
    body = {"defaults": SMALL, "items": [{"prompt": f"p{i}", "seed": i} for i in range(3)], "metadata": {"run": "1"}}
    response = api.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert response.headers["location"] == f"/v1/batches/{batch['id']}"
    assert batch["total"] == 3 and batch["counts"]["queued"] == 3 and batch["status"] == "running"
    assert batch["metadata"] == {"run": "1"} and batch["tenant"] == "acme"
    jobs = [api.get(f"/v1/jobs/{job_id}").json() for job_id in batch["job_ids"]]
    assert [j["request"]["prompt"] for j in jobs] == ["p0", "p1", "p2"]
    assert all(j["request"]["width"] == 64 and j["batch_id"] == batch["id"] and j["tenant"] == "acme" for j in jobs)
    assert [j["request"]["seed"] for j in jobs] == [0, 1, 2] and jobs[0]["request"]["model"] == "tiny"
    # Batch jobs travel on the batch queue, addressed to the batch actor, in the JobMessage shape.
    assert _state(redis_client)[:2] == (3, 3) and redis_client.llen("dramatiq:sdq-generate") == 0
    message = json.loads(next(iter(redis_client.hvals("dramatiq:sdq-batch.msgs"))))
    assert message["actor_name"] == BATCH_ACTOR and message["queue_name"] == "sdq-batch"
    # The message names the job; the worker runs the request its record holds (resolved: seeds 0, 1, 2 above).
    assert message["args"][0] == {"v": 1, "job_id": message["args"][0]["job_id"]}
    assert message["args"][0]["job_id"] in batch["job_ids"]


def test_array_and_json_lines_bodies(api: TestClient) -> None:
    array = api.post("/v1/batches", json=[{"prompt": "a", **SMALL}, {"prompt": "b", **SMALL}])
    assert array.status_code == 202 and array.json()["total"] == 2
    lines = b'{"defaults": {"width": 64, "height": 64, "steps": 2}}\n{"prompt": "a"}\n\n{"prompt": "b", "steps": 3}\n'
    ndjson = api.post("/v1/batches", content=lines, headers={"content-type": "application/x-ndjson"})
    assert ndjson.status_code == 202, ndjson.text
    steps = [api.get(f"/v1/jobs/{j}").json()["request"]["steps"] for j in ndjson.json()["job_ids"]]
    assert steps == [2, 3]


BAD = {
    "bad width at index 7": ([{"prompt": "ok"}] * 7 + [{"prompt": "x", "width": 65}], "items.7.width"),
    "unknown field": ([{"prompt": "ok", "cfg": 1}], "items.0.cfg"),
    "missing prompt": ([{"width": 64}], "items.0.prompt"),
    "not an object": (["just a string"], "items.0"),
    "empty": ([], "items"),
    "bad default": ({"defaults": {"steps": 0}, "items": [{"prompt": "x"}]}, "defaults.steps"),
    "unknown top-level": ({"items": [{"prompt": "x"}], "colour": 1}, "colour"),
    "too many": ([{"prompt": "x"}] * (MAX_BATCH_ITEMS + 1), "items"),
    "scalar body": (42, "body"),
}


@pytest.mark.parametrize(("body", "field"), BAD.values(), ids=BAD.keys())
def test_any_bad_item_is_422_naming_it_and_nothing_is_enqueued(
    api: TestClient, redis_client: redis.Redis, body: object, field: str
) -> None:
    before = _state(redis_client)
    response = api.post("/v1/batches", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in [f["field"] for f in error["fields"]], error
    assert _state(redis_client) == before and redis_client.keys("sdq:batch:*") == []


def test_garbage_bodies_are_422(api: TestClient, redis_client: redis.Redis) -> None:
    for content, kind in [(b"not json", "application/json"), (b'{"prompt": "a"}\nnot json\n', "application/x-ndjson")]:
        response = api.post("/v1/batches", content=content, headers={"content-type": kind})
        assert response.status_code == 422 and response.json()["error"]["fields"][0]["field"] == "body"
    assert _state(redis_client) == (0, 0, 0)


def test_a_model_not_served_names_the_item(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path, token: str
) -> None:
    app = make_app(redis_server, tmp_path, allowed_models=frozenset({"tiny"}))
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as api:
        response = api.post("/v1/batches", json=[{"prompt": "a"}, {"prompt": "b", "model": "org/other"}])
    assert response.status_code == 422 and response.json()["error"]["fields"][0]["field"] == "items.1.model"
    assert _state(redis_client) == (0, 0, 0)


def test_bulk_bodies_pass_the_body_limit_on_this_route_only(api: TestClient) -> None:
    items = [{"prompt": "p" * 1500, **SMALL} for _ in range(2000)]  # about 3.4 MB
    response = api.post("/v1/batches", json=items)
    assert response.status_code == 202 and response.json()["total"] == 2000
    assert api.post("/v1/jobs", json={"prompt": "p" * (2 * 1024 * 1024)}).status_code == 413


def test_counts_progress_and_finished_feed_follow_the_jobs(api: TestClient, redis_client: redis.Redis) -> None:
    batch = api.post("/v1/batches", json={"defaults": SMALL, "items": [{"prompt": f"p{i}"} for i in range(4)]}).json()
    store = JobStore(redis_client, ttl_s=3600)
    first, second, *_ = batch["job_ids"]
    attempt = store.claim(first, worker="w", lease_s=30, max_attempts=3).attempt
    running = api.get(f"/v1/batches/{batch['id']}").json()
    assert running["counts"] == {"queued": 3, "running": 1, "succeeded": 0, "failed": 0, "canceled": 0}
    store.settle(first, attempt, JobStatus.SUCCEEDED)
    attempt = store.claim(second, worker="w", lease_s=30, max_attempts=3).attempt
    store.settle(second, attempt, JobStatus.FAILED, error={"code": "internal", "message": "x"})
    now = api.get(f"/v1/batches/{batch['id']}").json()
    assert now["counts"] == {"queued": 2, "running": 0, "succeeded": 1, "failed": 1, "canceled": 0}
    assert now["progress"] == 0.5 and now["status"] == "running"
    page = api.get(f"/v1/batches/{batch['id']}/jobs").json()
    assert [j["id"] for j in page["jobs"]] == [first, second] and page["next_offset"] == 2
    assert api.get(f"/v1/batches/{batch['id']}/jobs", params={"offset": 2}).json() == {"jobs": [], "next_offset": 2}


def test_cancel_stops_every_unfinished_job(api: TestClient, redis_client: redis.Redis) -> None:
    batch = api.post("/v1/batches", json=[{"prompt": f"p{i}", **SMALL} for i in range(5)]).json()
    store = JobStore(redis_client, ttl_s=3600)
    running = batch["job_ids"][0]
    store.claim(running, worker="w", lease_s=30, max_attempts=3)
    canceled = api.post(f"/v1/batches/{batch['id']}/cancel").json()
    assert canceled["cancel_requested"] and canceled["counts"]["canceled"] == 4 and canceled["counts"]["running"] == 1
    assert store.get(running).cancel_requested  # stops at its next denoising step
    assert api.post(f"/v1/batches/{batch['id']}/cancel").status_code == 200  # cancel again: harmless


def test_another_tenants_batch_is_not_found(api: TestClient, redis_client: redis.Redis) -> None:
    batch = api.post("/v1/batches", json=[{"prompt": "a", **SMALL}]).json()
    other = {"Authorization": f"Bearer {KeyStore(redis_client).create('globex')[1]}"}
    for method, path in [("GET", ""), ("GET", "/jobs"), ("POST", "/cancel")]:
        response = api.request(method, f"/v1/batches/{batch['id']}{path}", headers=other)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert api.get(f"/v1/batches/{batch['id']}").json()["cancel_requested"] is False
    assert api.get("/v1/batches/" + "0" * 32).status_code == 404
    assert api.get("/v1/batches/not-an-id").status_code == 404


def test_a_batch_webhook_is_recorded_and_guarded(api: TestClient, redis_client: redis.Redis) -> None:
    items = [{"prompt": "a", **SMALL}]
    refused = api.post("/v1/batches", json={"items": items, "webhook_url": "http://169.254.169.254/latest"})
    assert refused.status_code == 422 and refused.json()["error"]["fields"][0]["field"] == "webhook_url"
    assert _state(redis_client) == (0, 0, 0)
    batch = api.post("/v1/batches", json={"items": items, "webhook_url": "https://example.com/hook"}).json()
    assert redis_client.hget(f"sdq:batch:{batch['id']}", "webhook_url") == b"https://example.com/hook"
