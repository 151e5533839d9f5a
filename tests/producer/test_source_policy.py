"""What a job may name as a source: refused at submission (422 naming the field) where API keys are required."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from producer import JobRequest
from producer.apikeys import KeyStore
from producer.errors import SourceNotAllowedError
from producer.settings import ApiSettings
from producer.source_policy import policy_from

STRICT = policy_from(allowed_models=[], allowed_loras=[], strict=True, catalog=None)
OPEN = policy_from(allowed_models=[], allowed_loras=[], strict=False, catalog=None)
CONTROL = {"model": "/srv/cn", "image": "https://example.com/c.png"}


def _field(policy: object, **request: object) -> str | None:
    try:
        policy.check(JobRequest.model_validate({"prompt": "x", **request}), default_model="tiny")  # type: ignore[attr-defined]
    except SourceNotAllowedError as exc:
        return exc.field
    return None


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"loras": [{"name": "file:///etc"}]}, "loras.0.name"),
        ({"loras": [{"name": "style"}, {"name": "/etc"}]}, "loras.1.name"),
        ({"loras": [{"name": "s3://someone-elses-bucket/x"}]}, "loras.0.name"),
        ({"model": "/models/sd15"}, "model"),
        ({"model": "file:///"}, "model"),
        ({"model": "gs://bucket/sd"}, "model"),
        ({"refiner": {"model": "/models/refiner"}}, "refiner.model"),
        ({"controlnets": [CONTROL]}, "controlnets.0.model"),
        ({"ip_adapter": {"model": "az://acct/c/ip", "image": "https://example.com/i.png"}}, "ip_adapter.model"),
    ],
)
def test_strict_refuses_every_path_and_storage_url_a_job_names(request_fields: dict[str, object], field: str) -> None:
    assert _field(STRICT, **request_fields) == field
    assert _field(OPEN, **request_fields) is None  # the open embedded default (loopback, no keys) still takes them


def test_hub_ids_and_cache_names_pass_strict_without_lists() -> None:
    assert _field(STRICT, model="org/model", loras=[{"name": "style"}, {"name": "org/lora@main"}]) is None


def test_allow_lists_take_names_globs_and_prefixes_at_a_folder_boundary() -> None:
    policy = policy_from(
        allowed_models=["tiny", "file:///srv/models/"],
        allowed_loras=["myorg/*", "s3://farm/loras/", "house-style"],
        strict=True,
        catalog=None,
    )
    assert _field(policy, model="file:///srv/models/sd15", loras=[{"name": "s3://farm/loras/a"}]) is None
    assert _field(policy, loras=[{"name": "myorg/anything"}, {"name": "house-style"}]) is None
    assert _field(policy, loras=[{"name": "s3://farm/loras-other/a"}]) == "loras.0.name"
    assert _field(policy, loras=[{"name": "other/lora"}]) == "loras.0.name"  # a list binds hub ids too
    assert _field(policy, model="org/other") == "model"
    assert _field(policy, model="file:///srv/modelsX/sd") == "model"
    # ControlNet hub ids are not held to a list of base models; their paths are.
    assert _field(policy, controlnets=[{**CONTROL, "model": "org/cn"}]) is None
    assert _field(policy, controlnets=[{**CONTROL, "model": "file:///srv/models/cn"}]) is None
    assert _field(policy, controlnets=[CONTROL]) == "controlnets.0.model"


@pytest.fixture
def keyed_api(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    from producer.api.factory import build_app

    settings = ApiSettings(
        redis_url=redis_server, storage_url=(tmp_path / "objects").as_uri(), data_dir=tmp_path / "data", auth="required"
    )
    _, token = KeyStore(redis_client).create("acme")
    with TestClient(build_app(settings)) as client:
        yield client, token


@pytest.mark.redis
def test_with_keys_required_a_file_url_lora_is_a_422_naming_it_and_nothing_is_recorded(
    keyed_api: tuple[TestClient, str], redis_client: redis.Redis
) -> None:
    client, token = keyed_api
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post("/v1/jobs", json={"prompt": "x", "loras": [{"name": "file:///etc"}]}, headers=headers)
    assert response.status_code == 422, response.text
    fields = [item["field"] for item in response.json()["error"]["fields"]]
    assert fields == ["loras.0.name"] and "SDQ_ALLOWED_LORAS" in response.text
    assert not list(redis_client.scan_iter("sdq:job:*")) and not redis_client.llen("dramatiq:sdq-generate")
    batch = client.post("/v1/batches", content=b'{"prompt": "x", "model": "/etc"}\n', headers=headers)
    assert batch.status_code == 422 and "model" in batch.text
    named = client.post("/v1/jobs", json={"prompt": "x", "loras": [{"name": "style"}]}, headers=headers)
    assert named.status_code == 202, named.text
