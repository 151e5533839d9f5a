"""The HTTP API over real HTTP, with a real Redis and no worker: validation, reads, listing, cancel, file links."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis

from storage import LinkSigner, LocalStore
from tests.support import Stack, start_stack

pytestmark = pytest.mark.redis

QUEUE = "dramatiq:sdq-generate"


@pytest.fixture(scope="module")
def stack(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("api")
    running = start_stack(tmp, redis_server, tmp / "models")
    yield running
    running.stop()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=10) as client:
        yield client


def _queue_state(redis_server: str) -> tuple[int, int, int]:
    client = redis.Redis.from_url(redis_server)
    return client.llen(QUEUE), client.hlen(QUEUE + ".msgs"), client.zcard("sdq:jobs")


INVALID = {
    "width 65": ({"prompt": "a cat", "width": 65}, "width"),
    "steps 0": ({"prompt": "a cat", "steps": 0}, "steps"),
    "5000-character prompt": ({"prompt": "x" * 5000}, "prompt"),
    "unknown field": ({"prompt": "a cat", "cfg": 7}, "cfg"),
    "missing prompt": ({"width": 512}, "prompt"),
    "area too large": ({"prompt": "a cat", "width": 2048, "height": 2048}, "height"),
    "seed too large": ({"prompt": "a cat", "seed": 2**32}, "seed"),
    "wrong type": ({"prompt": "a cat", "steps": "many"}, "steps"),
    "array body": ([{"prompt": "a cat"}], "body"),
}


@pytest.mark.parametrize(("body", "field"), INVALID.values(), ids=INVALID.keys())
def test_invalid_requests_get_422_with_the_field_and_enqueue_nothing(
    http: httpx.Client, redis_server: str, body: object, field: str
) -> None:
    before = _queue_state(redis_server)
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [f["field"] for f in error["fields"]], error
    assert "Traceback" not in response.text and "x" * 100 not in response.text  # no echo of huge inputs
    assert _queue_state(redis_server) == before


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"not json", {"content-type": "application/json"}),
        (b"", {}),
        (b'{"prompt": ', {}),
        (b"prompt=a+cat", {"content-type": "application/x-www-form-urlencoded"}),
    ],
    ids=["garbage", "empty", "truncated", "form"],
)
def test_non_json_bodies_get_4xx_json(http: httpx.Client, redis_server: str, content: bytes, headers: dict) -> None:
    before = _queue_state(redis_server)
    response = http.post("/v1/jobs", content=content, headers=headers)
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"] == "validation_error"
    assert _queue_state(redis_server) == before


def test_submit_returns_202_with_location_and_a_resolved_request(http: httpx.Client, redis_server: str) -> None:
    before = _queue_state(redis_server)
    response = http.post("/v1/jobs", json={"prompt": "a cat", "width": 64, "height": 64})
    assert response.status_code == 202
    record = response.json()
    assert response.headers["location"] == f"/v1/jobs/{record['id']}"
    assert record["status"] == "queued" and record["attempts"] == 0
    assert record["request"]["model"] == "tiny" and isinstance(record["request"]["seed"], int)
    assert _queue_state(redis_server)[0] == before[0] + 1
    assert http.get(response.headers["location"]).json()["request"] == record["request"]


def test_unknown_and_malformed_ids_are_404(http: httpx.Client) -> None:
    for job_id in ("0" * 32, "not-a-job", "..%2F..%2Fetc"):
        for method, suffix in (("GET", ""), ("POST", "/cancel")):
            response = http.request(method, f"/v1/jobs/{job_id}{suffix}")
            assert response.status_code == 404, (method, job_id)
            assert response.json()["error"]["code"] == "not_found"


def test_listing_filters_and_pages(http: httpx.Client) -> None:
    ids = [http.post("/v1/jobs", json={"prompt": f"p{i}"}).json()["id"] for i in range(3)]
    http.post(f"/v1/jobs/{ids[1]}/cancel")
    page = http.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2] and page["next_cursor"]
    rest = http.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert rest["jobs"][0]["id"] == ids[0]
    canceled = http.get("/v1/jobs", params={"status": "canceled"}).json()["jobs"]
    assert ids[1] in [j["id"] for j in canceled] and ids[0] not in [j["id"] for j in canceled]
    for params in ({"limit": 0}, {"limit": 1000}, {"status": "done"}, {"cursor": "abc"}):
        assert http.get("/v1/jobs", params=params).status_code == 422, params


def test_cancel_of_a_queued_job(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"prompt": "a cat"}).json()["id"]
    response = http.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200  # idempotent


def test_health_and_openapi(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/healthz"} <= set(paths)


def _local_object(stack: Stack, key: str, data: bytes) -> LinkSigner:
    data_dir = Path(stack.env["SDQ_DATA_DIR"])
    LocalStore(data_dir / "objects", signer=None).put(key, data, content_type="image/png")
    return LinkSigner((data_dir / "signing.key").read_text().strip().encode(), stack.api_url)


def test_signed_links_serve_files_and_refuse_tampered_or_expired_ones(stack: Stack, http: httpx.Client) -> None:
    signer = _local_object(stack, "jobs/demo/0.png", b"\x89PNG fake")
    good = signer.sign("jobs/demo/0.png", expires_in=timedelta(minutes=5))
    response = httpx.get(good)
    assert response.status_code == 200 and response.content == b"\x89PNG fake"
    assert response.headers["content-type"] == "image/png"

    url = httpx.URL(good)
    signature = url.params["signature"]
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    tampered = [
        url.copy_set_param("signature", flipped),
        url.copy_set_param("expires", str(int(url.params["expires"]) + 3600)),
        httpx.URL(str(url).replace("0.png", "1.png")),
        url.copy_remove_param("signature"),
    ]
    for bad in tampered:
        response = httpx.get(bad)
        assert response.status_code == 403, bad
        assert response.json()["error"]["code"] == "forbidden"

    expired = signer.sign("jobs/demo/0.png", expires_in=timedelta(seconds=1), now=time.time() - 3600)
    response = httpx.get(expired)
    assert response.status_code == 403 and "expired" in response.json()["error"]["message"]


def test_oversized_bodies_get_413_and_enqueue_nothing(http: httpx.Client, redis_server: str) -> None:
    before = _queue_state(redis_server)
    body = b'{"prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = http.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit must hold on the bytes actually streamed
        for _ in range(40):
            yield b"x" * 65536

    response = http.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert _queue_state(redis_server) == before


def test_openapi_documents_the_error_shape_clients_get(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    responses = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert {"202", "413", "422", "503"} <= set(responses)
