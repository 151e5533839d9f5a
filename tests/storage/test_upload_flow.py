"""The whole upload flow on every backend: `POST /v1/uploads` through the real API (in-process, real Redis), the
bytes sent straight to the emulator with a plain client, then jobs: the owner's is accepted, another tenant's 422."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.api.auth import Authenticator
from producer.apikeys import KeyStore
from producer.broker import make_broker
from producer.ratelimit import Limits
from producer.service import JobService
from producer.store import JobStore
from storage import FullStore
from tests.inputs.images import png

pytestmark = pytest.mark.redis

SMALL = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2}


@pytest.fixture
def api(store: FullStore, redis_client: redis.Redis) -> Iterator[TestClient]:
    service = JobService(
        JobStore(redis_client, ttl_s=3600),
        make_broker(redis_client, heartbeat_timeout_s=60),
        queue="sdq-generate",
        default_model="tiny",
    )
    auth = Authenticator(KeyStore(redis_client), None, Limits(0, 1, 0))
    app = create_app(service, store, url_expiry=timedelta(hours=1), auth=auth)
    with TestClient(app) as client:
        yield client


def _send(api: TestClient, grant: dict, data: bytes) -> int:
    # The local store's grant points at this very API (the reference file route of the `local_store` fixture).
    client = httpx.Client(timeout=30)
    with client:
        if grant["method"] == "POST":
            files = {"file": ("photo.png", data, grant["content_type"])}
            return client.post(grant["url"], data=grant["fields"], files=files).status_code
        return client.put(grant["url"], content=data, headers=grant["headers"]).status_code


def test_an_upload_serves_its_tenants_jobs_only(api: TestClient, redis_client: redis.Redis) -> None:
    keys = KeyStore(redis_client)
    mine = {"Authorization": f"Bearer {keys.create('acme')[1]}"}
    theirs = {"Authorization": f"Bearer {keys.create('globex')[1]}"}
    grant = api.post("/v1/uploads", json={"content_type": "image/png"}, headers=mine).json()

    assert _send(api, grant, png()) in (200, 201, 204)

    job = {**SMALL, "image": grant["image"]}
    accepted = api.post("/v1/jobs", json=job, headers=mine)
    refused = api.post("/v1/jobs", json=job, headers=theirs)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["request"]["image"] == {"upload": grant["id"]}
    assert refused.status_code == 422 and refused.json()["error"]["fields"][0]["field"] == "image.upload"
