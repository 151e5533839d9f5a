"""The routes the dashboard reads, over real HTTP on a real Redis (no worker): the batch list and a batch's items,
one SSE stream for many jobs, and the controller's fleet history."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from producer.apikeys import KeyStore
from producer.controller.history import FleetHistory
from producer.controller.scaler import Decision
from producer.controller.work import QueueWork
from tests.support import Stack, start_stack

pytestmark = pytest.mark.redis

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def stack(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("dash")
    running = start_stack(tmp, redis_server, tmp / "models")
    yield running
    running.stop()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=10) as client:
        yield client


def _events(http: httpx.Client, path: str, until: int) -> list[tuple[str, dict[str, object]]]:
    """The first `until` events of an SSE route."""
    found: list[tuple[str, dict[str, object]]] = []
    with http.stream("GET", path) as response:
        assert response.status_code == 200
        name = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                found.append((name, json.loads(line.split(":", 1)[1])))
                if len(found) >= until:
                    break
    return found


def test_batches_are_listed_newest_first_with_their_counts_and_items(http: httpx.Client) -> None:
    first = http.post("/v1/batches", json={"items": [{"prompt": "a"}, {"prompt": "b"}], "defaults": SMALL}).json()
    second = http.post("/v1/batches", json={"items": [{"prompt": "c"}], "defaults": SMALL}).json()
    page = http.get("/v1/batches", params={"limit": 1}).json()
    assert [b["id"] for b in page["batches"]] == [second["id"]] and page["next_cursor"]
    rest = http.get("/v1/batches", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [b["id"] for b in rest["batches"]] == [first["id"]]
    assert rest["batches"][0]["counts"]["queued"] == 2
    items = http.get(f"/v1/batches/{first['id']}/items").json()
    assert [j["request"]["prompt"] for j in items["jobs"]] == ["a", "b"] and items["next_offset"] is None
    assert http.get(f"/v1/batches/{'0' * 32}/items").status_code == 404


def test_one_stream_tells_about_many_jobs_and_new_ones(http: httpx.Client) -> None:
    jobs = [http.post("/v1/jobs", json={"prompt": f"p{i}", **SMALL}).json() for i in range(3)]
    unknown = "f" * 32
    ids = ",".join([*(j["id"] for j in jobs), unknown])
    first = _events(http, f"/v1/events?jobs={ids}", until=5)
    assert [name for name, _ in first] == ["ready", "job", "job", "job", "gone"]
    assert [data["id"] for _, data in first[1:]] == [*(j["id"] for j in jobs), unknown]
    with http.stream("GET", "/v1/events?recent=true") as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:")) == 'data: {"jobs": 0, "recent": true}'
        created = httpx.post(f"{http.base_url}/v1/jobs", json={"prompt": "new", **SMALL}).json()
        data = next(json.loads(line[5:]) for line in lines if line.startswith("data:"))
    assert data["id"] == created["id"] and data["status"] == "queued"


def test_the_stream_refuses_bad_or_too_many_ids_naming_the_field(http: httpx.Client) -> None:
    for ids in ("nope", ",".join(["a" * 32] * 201)):
        response = http.get("/v1/events", params={"jobs": ids})
        assert response.status_code == 422
        assert response.json()["error"]["fields"][0]["field"] == "jobs"


def test_fleet_history_returns_the_controllers_samples_oldest_first(http: httpx.Client, redis_server: str) -> None:
    history = FleetHistory(redis.Redis.from_url(redis_server), sample_s=10)
    work = QueueWork("sdq-generate+sdq-batch", 3, 0, 1, 0, 1, 0)
    assert history.record(Decision(work, desired=2, capacity=1, action="raise", target=2), now=1e9)
    assert not history.record(Decision(work, desired=2, capacity=2, action="hold", target=2), now=1e9 + 5)  # too soon
    history.record(Decision(work, desired=2, capacity=2, action="hold", target=None), now=1e9 + 10)
    everything = http.get("/v1/fleet/history", params={"minutes": 60}).json()
    assert everything["samples"] == []  # older than an hour
    import time

    history.record(Decision(work, desired=1, capacity=2, action="hold", target=None), now=time.time())
    recent = http.get("/v1/fleet/history").json()["samples"]
    assert [(s["work_remaining"], s["desired"], s["capacity"]) for s in recent] == [(4, 1, 2)]


def test_a_jobs_input_images_come_with_presigned_links_and_a_text_job_has_none(http: httpx.Client) -> None:
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 99, 199)).save(png, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    mask = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    job = http.post("/v1/jobs", json={**SMALL, "prompt": "x", "image": data_url, "mask_image": mask}).json()
    record = http.get(f"/v1/jobs/{job['id']}").json()
    upload = record["request"]["image"]["upload"]
    assert [(i["field"], i["name"], i["upload"]) for i in record["inputs"]] == [
        ("image", "image", upload),
        ("mask_image", "mask", upload),  # the same bytes: one upload
    ]
    url = record["inputs"][0]["url"]
    assert f"uploads/{upload}" in url and "signature=" in url  # queued: the upload as it was sent
    fetched = httpx.get(url, timeout=10)  # the link alone is enough: no API key in it or with it
    assert fetched.status_code == 200 and fetched.content == png.getvalue()
    tampered = httpx.get(url.replace("signature=", "signature=0"), timeout=10)
    assert tampered.status_code == 403
    text = http.post("/v1/jobs", json={**SMALL, "prompt": "no inputs"}).json()
    assert "inputs" not in http.get(f"/v1/jobs/{text['id']}").json()


def test_the_dashboards_policy_lets_uploads_reach_only_the_presigned_origin(stack: Stack) -> None:
    policy = httpx.get(f"{stack.api_url}/ui/").headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["connect-src"] == f"'self' {stack.api_url}"  # local storage: this API's /v1/files
    assert directives["script-src"] == "'self'"


def test_a_tenant_sees_only_its_own_batches(
    stack: Stack, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = redis_server.rsplit("/", 1)[0] + "/4"
    redis.Redis.from_url(url).flushdb()
    keys = KeyStore(redis.Redis.from_url(url))
    (_, mine), (_, theirs) = keys.create("acme"), keys.create("umbrella")
    tmp = tmp_path_factory.mktemp("dash-keys")
    keyed = start_stack(tmp, url, tmp / "models", SDQ_AUTH="required")
    try:
        for token, prompt in ((mine, "mine"), (theirs, "theirs")):
            body = {"items": [{"prompt": prompt}], "defaults": SMALL}
            assert (
                httpx.post(
                    f"{keyed.api_url}/v1/batches", json=body, headers={"Authorization": f"Bearer {token}"}
                ).status_code
                == 202
            )
        listed = httpx.get(f"{keyed.api_url}/v1/batches", headers={"Authorization": f"Bearer {mine}"}).json()
        assert [b["tenant"] for b in listed["batches"]] == ["acme"]
        assert httpx.get(f"{keyed.api_url}/v1/batches").status_code == 401
    finally:
        keyed.stop()
