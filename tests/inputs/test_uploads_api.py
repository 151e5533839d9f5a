"""Uploads and the submission checks of image inputs, through the real API (in-process app, real Redis, local
storage with its signed PUT route): tenants own their uploads, and bad images are 422s naming the field."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from producer.apikeys import KeyStore
from producer.inputs import InputLimits
from tests.inputs.images import bomb_png, data_url, gradient_png, noise_png, png, truncated
from tests.support import make_app

pytestmark = pytest.mark.redis

SMALL = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2}
QUEUE = "dramatiq:sdq-generate"


@pytest.fixture
def tokens(redis_client: redis.Redis) -> dict[str, str]:
    keys = KeyStore(redis_client)
    return {"acme": keys.create("acme")[1], "globex": keys.create("globex")[1]}


@pytest.fixture
def api(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    limits = InputLimits(max_inline_bytes=64 * 1024, max_upload_bytes=256 * 1024)
    with TestClient(make_app(redis_server, tmp_path, inputs=limits)) as client:
        yield client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _upload(api: TestClient, token: str, data: bytes, content_type: str = "image/png") -> str:
    created = api.post("/v1/uploads", json={"content_type": content_type}, headers=_auth(token))
    assert created.status_code == 201, created.text
    grant = created.json()
    assert grant["method"] == "PUT" and grant["image"] == {"upload": grant["id"]}
    assert grant["max_bytes"] == 256 * 1024 and grant["expires_at"] < grant["usable_until"]
    # Straight to storage, with the grant's headers and no API key.
    sent = api.put(grant["url"], content=data, headers=grant["headers"])
    assert sent.status_code == 200, sent.text
    return str(grant["id"])


def _queued(client: redis.Redis) -> int:
    return int(client.llen(QUEUE))


def test_a_job_uses_an_upload_of_its_own_tenant(api: TestClient, tokens: dict[str, str]) -> None:
    upload_id = _upload(api, tokens["acme"], png())

    response = api.post("/v1/jobs", json={**SMALL, "image": {"upload": upload_id}}, headers=_auth(tokens["acme"]))

    assert response.status_code == 202, response.text
    request = response.json()["request"]
    assert request["image"] == {"upload": upload_id} and "strength" not in request
    assert api.get(f"/v1/jobs/{response.json()['id']}", headers=_auth(tokens["acme"])).json()["request"] == request


def test_another_tenants_upload_reads_as_unknown_and_enqueues_nothing(
    api: TestClient, tokens: dict[str, str], redis_client: redis.Redis
) -> None:
    upload_id = _upload(api, tokens["acme"], png())
    before = _queued(redis_client)

    for body in (
        {**SMALL, "image": {"upload": upload_id}},
        {**SMALL, "controlnets": [{"model": "org/cn", "image": {"upload": upload_id}}]},
    ):
        response = api.post("/v1/jobs", json=body, headers=_auth(tokens["globex"]))
        assert response.status_code == 422
        field = response.json()["error"]["fields"][0]
        assert field["field"] in ("image.upload", "controlnets.0.image.upload")
        assert "no upload" in field["message"]
    unknown = api.post("/v1/jobs", json={**SMALL, "image": {"upload": "f" * 32}}, headers=_auth(tokens["globex"]))
    assert unknown.json()["error"]["fields"][0]["message"] == field["message"].replace(upload_id, "f" * 32)
    assert _queued(redis_client) == before


def test_an_upload_whose_bytes_never_arrived_is_refused(api: TestClient, tokens: dict[str, str]) -> None:
    upload_id = api.post("/v1/uploads", headers=_auth(tokens["acme"])).json()["id"]

    response = api.post("/v1/jobs", json={**SMALL, "image": {"upload": upload_id}}, headers=_auth(tokens["acme"]))

    assert response.status_code == 422
    assert "no bytes yet" in response.json()["error"]["fields"][0]["message"]


def test_a_data_url_becomes_an_upload_and_a_retry_replays_the_same_job(
    api: TestClient, tokens: dict[str, str], redis_client: redis.Redis
) -> None:
    body = {**SMALL, "image": data_url(png()), "strength": 0.6}
    headers = {**_auth(tokens["acme"]), "Idempotency-Key": "img-1"}

    first = api.post("/v1/jobs", json=body, headers=headers)
    again = api.post("/v1/jobs", json=body, headers=headers)

    assert first.status_code == 202 and again.status_code == 202, first.text
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["id"] == first.json()["id"]
    image = first.json()["request"]["image"]
    assert set(image) == {"upload"} and first.json()["request"]["strength"] == 0.6
    assert "base64" not in redis_client.hget(f"sdq:job:{first.json()['id']}", "request").decode()
    # The id is the tenant's: another tenant sending the same bytes gets its own.
    theirs = api.post("/v1/jobs", json=body, headers=_auth(tokens["globex"])).json()["request"]["image"]
    assert theirs != image


BAD_IMAGES = {
    "bomb": (bomb_png(), "decompression bomb"),
    "over the pixel cap": (bomb_png(5000), "over the limit"),
    "truncated": (truncated(gradient_png(128, 128)), "corrupt or truncated"),
    "not an image": (b"GIF89a not really", "is not an image"),
    "too many bytes": (noise_png(256, 256), "SDQ_MAX_INLINE_IMAGE_BYTES"),
}


@pytest.mark.parametrize(("data", "says"), BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_bad_inline_images_are_422s_naming_the_field(
    api: TestClient, tokens: dict[str, str], redis_client: redis.Redis, data: bytes, says: str
) -> None:
    before = _queued(redis_client)
    body = {**SMALL, "ip_adapter": {"model": "org/ipa", "image": data_url(data)}}

    response = api.post("/v1/jobs", json=body, headers=_auth(tokens["acme"]))

    assert response.status_code == 422, response.text
    field = response.json()["error"]["fields"][0]
    assert field["field"] == "ip_adapter.image.url" and says in field["message"]
    assert _queued(redis_client) == before


@pytest.mark.parametrize(("data", "says"), list(BAD_IMAGES.values())[:3], ids=list(BAD_IMAGES)[:3])
def test_bad_uploaded_images_are_422s_too(api: TestClient, tokens: dict[str, str], data: bytes, says: str) -> None:
    upload_id = _upload(api, tokens["acme"], data)

    response = api.post("/v1/jobs", json={**SMALL, "image": {"upload": upload_id}}, headers=_auth(tokens["acme"]))

    assert response.status_code == 422 and says in response.json()["error"]["fields"][0]["message"]


def test_a_mask_of_another_size_than_its_image_is_refused(api: TestClient, tokens: dict[str, str]) -> None:
    image = _upload(api, tokens["acme"], png(64, 64))
    body = {**SMALL, "image": {"upload": image}, "mask_image": data_url(png(64, 48, color=(255,)))}

    response = api.post("/v1/jobs", json=body, headers=_auth(tokens["acme"]))

    assert response.status_code == 422
    assert response.json()["error"]["fields"] == [
        {"field": "mask_image", "message": "must be the size of image (64×64); it is 64×48"}
    ]
    body["mask_image"] = data_url(png(64, 64, color=(255,), mode="L"))
    assert api.post("/v1/jobs", json=body, headers=_auth(tokens["acme"])).status_code == 202


@pytest.mark.parametrize(
    "url", ["http://example.com/a.png", "https://127.0.0.1/a.png", "https://2852039166/", "https://[::1]/x.png"]
)
def test_image_urls_that_can_be_refused_without_dns_are_refused_at_submission(
    api: TestClient, tokens: dict[str, str], url: str
) -> None:
    response = api.post("/v1/jobs", json={**SMALL, "image": {"url": url}}, headers=_auth(tokens["acme"]))

    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "image.url"


def test_a_public_https_url_is_recorded_as_given(api: TestClient, tokens: dict[str, str]) -> None:
    body = {**SMALL, "image": "https://images.example.com/cat.png"}

    response = api.post("/v1/jobs", json=body, headers=_auth(tokens["acme"]))

    assert response.status_code == 202
    assert response.json()["request"]["image"] == {"url": "https://images.example.com/cat.png"}


def test_a_batch_names_the_item_with_a_foreign_upload(
    api: TestClient, tokens: dict[str, str], redis_client: redis.Redis
) -> None:
    theirs = _upload(api, tokens["globex"], png())
    items = [{**SMALL}, {**SMALL, "image": {"upload": theirs}}]

    response = api.post("/v1/batches", json=items, headers=_auth(tokens["acme"]))

    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "items.1.image.upload"
    assert int(redis_client.llen("dramatiq:sdq-batch")) == 0


def test_a_batch_with_a_shared_inline_image_stores_it_once(
    api: TestClient, tokens: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    batch = {"defaults": {**SMALL, "image": data_url(png())}, "items": [{"prompt": f"p{i}"} for i in range(3)]}

    response = api.post("/v1/batches", json=batch, headers=_auth(tokens["acme"]))

    assert response.status_code == 202, response.text
    requests = [json.loads(redis_client.hget(f"sdq:job:{job_id}", "request")) for job_id in response.json()["job_ids"]]
    assert len({r["image"]["upload"] for r in requests}) == 1 and [r["prompt"] for r in requests] == ["p0", "p1", "p2"]
    assert len(list((tmp_path / "objects" / "uploads").iterdir())) == 1


def test_text_only_requests_serialize_without_any_image_field(api: TestClient, tokens: dict[str, str]) -> None:
    request = api.post("/v1/jobs", json=SMALL, headers=_auth(tokens["acme"])).json()["request"]

    assert not {"image", "strength", "mask_image", "controlnets", "ip_adapter"} & set(request)


def test_the_local_put_route_refuses_tampered_oversized_and_non_upload_writes(
    api: TestClient, tokens: dict[str, str], tmp_path: Path
) -> None:
    grant = api.post("/v1/uploads", headers=_auth(tokens["acme"])).json()
    headers = grant["headers"]

    tampered = grant["url"].replace("max_bytes=262144", "max_bytes=262145")
    assert api.put(tampered, content=png(), headers=headers).status_code == 403
    assert api.put(grant["url"], content=png(), headers={"Content-Type": "text/html"}).status_code == 403
    assert api.put(grant["url"], content=b"x" * (256 * 1024 + 1), headers=headers).status_code == 413
    assert not (tmp_path / "objects" / "uploads").exists()
    assert api.put(grant["url"], content=png(), headers=headers).status_code == 200


def test_uploads_need_an_api_key(api: TestClient) -> None:
    assert api.post("/v1/uploads").status_code == 401


def test_the_readme_curl_that_starts_an_upload_works_as_written(api: TestClient, tokens: dict[str, str]) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text().replace("\\\n", " ")  # continued lines
    [line] = [line for line in readme.splitlines() if line.startswith("curl") and "/v1/uploads" in line]
    words = shlex.split(line)
    headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
    headers = {name.lower(): value for name, value in headers.items()}
    headers["authorization"] = f"Bearer {tokens['acme']}"
    headers.setdefault("content-type", "application/x-www-form-urlencoded")  # what curl's -d sends unless told

    created = api.post("/v1/uploads", content=words[words.index("-d") + 1], headers=headers)

    assert created.status_code == 201, created.text
