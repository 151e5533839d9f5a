"""The webhook routes over real HTTP: `sdq api` and `sdq webhooks` as processes, a real Redis, receivers on
loopback. Inbound jobs must be signed, fresh and new; a job's deliveries can be listed and redelivered."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from standardwebhooks.webhooks import Webhook

from producer import AsyncClient, Client, JobNotFoundError
from producer.apikeys import KeyStore
from producer.webhooks.log import Delivery, DeliveryList, DeliveryState
from producer.webhooks.signing import new_secret, signed_headers
from tests.support import Stack, start_stack, wait_for
from tests.webhooks.receivers import receiver

pytestmark = pytest.mark.redis

INBOUND = new_secret()
OUTBOUND = new_secret()
QUEUE = "dramatiq:sdq-generate"
ENV = {
    "SDQ_INBOUND_WEBHOOK_SECRETS": INBOUND,
    "SDQ_WEBHOOK_SECRETS": OUTBOUND,
    "SDQ_WEBHOOK_ALLOW": "127.0.0.1/32",
    "SDQ_WEBHOOK_RETRY_SCHEDULE_S": "0,0.5,1",
}


@pytest.fixture(scope="module")
def stack(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("hooks")
    running = start_stack(tmp, redis_server, tmp / "models", **ENV)
    yield running
    running.stop()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


def _enqueued(redis_server: str) -> tuple[int, int]:
    client = redis.Redis.from_url(redis_server)
    return client.llen(QUEUE), client.zcard("sdq:jobs")


def _signed(body: object, *, secret: str = INBOUND, msg_id: str | None = None, now_s: float | None = None) -> dict:
    raw = json.dumps(body).encode()
    headers = signed_headers([secret], msg_id or f"msg_{time.time_ns()}", raw, now_s=now_s)
    return {"content": raw, "headers": {**headers, "content-type": "application/json"}}


def test_a_signed_job_is_accepted_and_enqueued(http: httpx.Client, redis_server: str) -> None:
    before = _enqueued(redis_server)
    response = http.post("/v1/hooks/jobs", **_signed({"prompt": "a pushed fox", "width": 64, "height": 64}))
    assert response.status_code == 202, response.text
    (job,) = response.json()["jobs"]
    assert job["status"] == "queued" and job["request"]["prompt"] == "a pushed fox"
    assert _enqueued(redis_server) == (before[0] + 1, before[1] + 1)
    assert http.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_a_signed_list_makes_one_job_per_item(http: httpx.Client, redis_server: str) -> None:
    before = _enqueued(redis_server)
    items = [{"prompt": f"item {i}", "width": 64, "height": 64} for i in range(3)]
    response = http.post("/v1/hooks/jobs", **_signed(items))
    assert response.status_code == 202, response.text
    assert [j["request"]["prompt"] for j in response.json()["jobs"]] == ["item 0", "item 1", "item 2"]
    assert _enqueued(redis_server)[0] == before[0] + 3


REFUSED = {
    "wrong secret": (lambda body: _signed(body, secret=new_secret()), 401, "invalid_signature"),
    "stale timestamp": (lambda body: _signed(body, now_s=time.time() - 301), 401, "invalid_signature"),
    "future timestamp": (lambda body: _signed(body, now_s=time.time() + 301), 401, "invalid_signature"),
    "no signature": (lambda body: {"json": body}, 401, "invalid_signature"),
    "tampered body": (
        lambda body: {**_signed(body), "content": json.dumps({**body, "steps": 149}).encode()},
        401,
        "invalid_signature",
    ),
}


@pytest.mark.parametrize(("make", "status", "code"), REFUSED.values(), ids=REFUSED.keys())
def test_bad_signatures_are_refused_and_nothing_is_enqueued(
    http: httpx.Client, redis_server: str, make: object, status: int, code: str
) -> None:
    before = _enqueued(redis_server)
    response = http.post("/v1/hooks/jobs", **make({"prompt": "x", "width": 64, "height": 64}))  # type: ignore[operator]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and "signature" in error["message"]
    assert _enqueued(redis_server) == before


def test_a_replayed_message_is_refused_with_409(http: httpx.Client, redis_server: str) -> None:
    signed = _signed({"prompt": "once", "width": 64, "height": 64}, msg_id="msg_replay_me")
    assert http.post("/v1/hooks/jobs", **signed).status_code == 202
    before = _enqueued(redis_server)
    again = http.post("/v1/hooks/jobs", **signed)
    assert again.status_code == 409 and again.json()["error"]["code"] == "replayed"
    assert "msg_replay_me" in again.json()["error"]["message"]
    resigned = _signed({"prompt": "once", "width": 64, "height": 64}, msg_id="msg_replay_me")  # fresh timestamp
    assert http.post("/v1/hooks/jobs", **resigned).status_code == 409
    assert _enqueued(redis_server) == before


def test_an_invalid_signed_job_gets_422_with_the_field_and_nothing_is_enqueued(
    http: httpx.Client, redis_server: str
) -> None:
    before = _enqueued(redis_server)
    response = http.post("/v1/hooks/jobs", **_signed([{"prompt": "ok"}, {"prompt": "bad", "width": 65}]))
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["1.width"]
    for body in (b"not json", b"[]"):
        signed = _signed(None)
        headers = signed_headers([INBOUND], f"msg_{time.time_ns()}", body)
        response = http.post("/v1/hooks/jobs", content=body, headers={**signed["headers"], **headers})
        assert response.status_code == 422, body
    assert _enqueued(redis_server) == before


def test_a_webhook_url_to_the_metadata_service_is_refused_at_submission(http: httpx.Client, redis_server: str) -> None:
    before = _enqueued(redis_server)
    for url in ("https://169.254.169.254/latest/meta-data/", "https://[::ffff:a9fe:a9fe]/", "http://example.com/"):
        response = http.post("/v1/jobs", json={"prompt": "x", "webhook_url": url})
        assert response.status_code == 422, url
        assert response.json()["error"]["fields"][0]["field"] == "webhook_url"
    assert _enqueued(redis_server) == before


def test_deliveries_are_listed_and_can_be_redelivered(http: httpx.Client) -> None:
    with receiver() as got:
        job = http.post("/v1/jobs", json={"prompt": "x", "width": 64, "height": 64, "webhook_url": got.url}).json()
        assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200  # queued → canceled: job.canceled
        (first,) = got.wait_for(1)
        Webhook(OUTBOUND).verify(first.body, first.headers)
        assert json.loads(first.body)["type"] == "job.canceled"

        def delivered() -> list[dict]:
            found = http.get(f"/v1/jobs/{job['id']}/deliveries").json()["deliveries"]
            return found if found and found[0]["state"] == "delivered" else []

        (delivery,) = wait_for(delivered, timeout_s=30)
        assert delivery["id"] == first.headers["webhook-id"] and delivery["attempts"][0]["status_code"] == 200
        response = http.post(f"/v1/jobs/{job['id']}/deliveries/{delivery['id']}/redeliver")
        assert response.status_code == 202 and response.json()["state"] in ("pending", "delivered")
        second = got.wait_for(2)[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]  # the same message, signed afresh
    Webhook(OUTBOUND).verify(second.body, second.headers)
    assert http.post(f"/v1/jobs/{job['id']}/deliveries/msg_nope/redeliver").status_code == 404
    assert http.get(f"/v1/jobs/{'0' * 32}/deliveries").status_code == 404


def test_the_sdks_list_and_redeliver_a_jobs_deliveries(stack: Stack) -> None:
    with receiver() as got, Client(stack.api_url) as sdk:
        job = sdk.submit("x", width=64, height=64, webhook_url=got.url)
        sdk.cancel(job.id)
        (first,) = got.wait_for(1)

        def delivered() -> list[Delivery]:
            found = sdk.deliveries(job.id).deliveries
            return found if found and found[0].state is DeliveryState.DELIVERED else []

        (delivery,) = wait_for(delivered, timeout_s=30)
        assert delivery.id == first.headers["webhook-id"] and delivery.attempts[0].status_code == 200
        again = sdk.redeliver(job.id, delivery.id)
        assert again.id == delivery.id and again.state in (DeliveryState.PENDING, DeliveryState.DELIVERED)
        second = got.wait_for(2)[1]
        assert second.headers["webhook-id"] == delivery.id
        # Redelivered again only once that attempt is logged (one in flight is a 409).
        wait_for(
            lambda: len((d := sdk.deliveries(job.id).deliveries[0]).attempts) == 2 and d.state.value == "delivered"
        )
        with pytest.raises(JobNotFoundError):
            sdk.deliveries("0" * 32)

        async def twin() -> tuple[DeliveryList, Delivery]:
            async with AsyncClient(stack.api_url) as client:
                listed = await client.deliveries(job.id)
                return listed, await client.redeliver(job.id, delivery.id)

        listed, third = asyncio.run(twin())
        assert [d.id for d in listed.deliveries] == [delivery.id] and third.id == delivery.id
        assert got.wait_for(3)[2].headers["webhook-id"] == delivery.id


@pytest.fixture(scope="module")
def keyed(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("hooks-keys")
    running = start_stack(tmp, redis_server, tmp / "models", **ENV, SDQ_AUTH="required")
    yield running
    running.stop()


def test_with_api_keys_the_keys_inbound_secret_submits_its_outbound_one_signs_and_jobs_belong_to_its_tenant(
    keyed: Stack, redis_server: str, tmp_path: Path
) -> None:
    keys = KeyStore(redis.Redis.from_url(redis_server))
    with receiver() as got, httpx.Client(base_url=keyed.api_url, timeout=30) as http:
        key, token = keys.create("acme", webhook_url=got.url)
        other, other_token = keys.create("globex")
        body = {"prompt": "pushed by acme", "width": 64, "height": 64}
        assert http.post("/v1/hooks/jobs", **_signed(body)).status_code == 401  # no key named
        assert (
            http.post(f"/v1/hooks/jobs?key_id={other.id}", **_signed(body, secret=key.inbound_secret)).status_code
            == 401
        )
        # The outbound secret (what every webhook receiver of the key holds) cannot submit jobs.
        forged = http.post(f"/v1/hooks/jobs?key_id={key.id}", **_signed(body, secret=key.outbound_secret))
        assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_signature"
        response = http.post(f"/v1/hooks/jobs?key_id={key.id}", **_signed(body, secret=key.inbound_secret))
        assert response.status_code == 202, response.text
        (job,) = response.json()["jobs"]
        mine = {"Authorization": f"Bearer {token}"}
        assert http.get(f"/v1/jobs/{job['id']}", headers=mine).status_code == 200
        assert http.get(f"/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {other_token}"}).status_code == 404
        # No webhook_url on the job: the key's default endpoint gets its events, signed with the key's secret.
        assert http.post(f"/v1/jobs/{job['id']}/cancel", headers=mine).status_code == 200
        (event,) = got.wait_for(1)
        assert Webhook(key.outbound_secret).verify(event.body, event.headers)["type"] == "job.canceled"
        deliveries = http.get(f"/v1/jobs/{job['id']}/deliveries", headers=mine)
        assert deliveries.status_code == 200 and len(deliveries.json()["deliveries"]) == 1
        foreign = http.get(f"/v1/jobs/{job['id']}/deliveries", headers={"Authorization": f"Bearer {other_token}"})
        assert foreign.status_code == 404


def test_an_inbound_list_past_its_keys_quota_creates_nothing_and_its_retry_goes_through_once_there_is_room(
    keyed: Stack, redis_server: str
) -> None:
    client = redis.Redis.from_url(redis_server)
    key, token = KeyStore(client).create("quota-co", max_queued_jobs=3)
    mine = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=keyed.api_url, timeout=30) as http:
        first = http.post("/v1/jobs", json={"prompt": "already waiting", "width": 64, "height": 64}, headers=mine)
        assert first.status_code == 202
        items = [{"prompt": f"hooked {n}", "width": 64, "height": 64} for n in range(3)]
        before = _enqueued(redis_server)
        delivery = _signed(items, secret=key.inbound_secret, msg_id="msg_over_quota")
        refused = http.post(f"/v1/hooks/jobs?key_id={key.id}", **delivery)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded", refused.text
        assert _enqueued(redis_server) == before  # all or nothing: not the first two of three
        listed = http.get("/v1/jobs", params={"limit": 50}, headers=mine).json()["jobs"]
        assert [j["request"]["prompt"] for j in listed] == ["already waiting"]
        assert http.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=mine).status_code == 200
        # The sender retries the same message (same webhook-id, signed again): now it fits, and it is not a replay.
        again = http.post(
            f"/v1/hooks/jobs?key_id={key.id}", **_signed(items, secret=key.inbound_secret, msg_id="msg_over_quota")
        )
        assert again.status_code == 202, again.text
        assert [j["request"]["prompt"] for j in again.json()["jobs"]] == ["hooked 0", "hooked 1", "hooked 2"]
        assert all(j["status"] == "queued" and j["queue_position"] is not None for j in again.json()["jobs"])
        assert _enqueued(redis_server)[0] == before[0] + 3
        replay = http.post(
            f"/v1/hooks/jobs?key_id={key.id}", **_signed(items, secret=key.inbound_secret, msg_id="msg_over_quota")
        )
        assert replay.status_code == 409 and replay.json()["error"]["code"] == "replayed"
        assert all(j["id"] in replay.json()["error"]["message"] for j in again.json()["jobs"])


def test_an_inbound_jobs_images_get_the_checks_of_post_v1_jobs(http: httpx.Client, redis_server: str) -> None:
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 90)).save(png, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    good = {"prompt": "repaint it", "width": 64, "height": 64, "image": {"url": data_url}}
    response = http.post("/v1/hooks/jobs", **_signed(good))
    assert response.status_code == 202, response.text
    (job,) = response.json()["jobs"]
    assert set(job["request"]["image"]) == {"upload"}  # stored as an upload: the record carries an id, not the image
    before = _enqueued(redis_server)
    broken = {**good, "image": {"url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}}
    refused = http.post("/v1/hooks/jobs", **_signed([good, broken]))
    assert refused.status_code == 422, refused.text
    assert [f["field"] for f in refused.json()["error"]["fields"]] == ["1.image.url"]
    assert _enqueued(redis_server) == before
