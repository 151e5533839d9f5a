"""API keys and tenants through the real API (in-process app, real Redis) and the real `sdq keys` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from producer.apikeys import KeyStore
from producer.settings import ApiSettings
from tests.support import make_app

pytestmark = pytest.mark.redis


@pytest.fixture
def keys(redis_client: redis.Redis) -> KeyStore:
    return KeyStore(redis_client)


@pytest.fixture
def api(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(redis_server, tmp_path)) as client:
        yield client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_key_is_stored_only_as_a_digest(keys: KeyStore, redis_client: redis.Redis) -> None:
    key, token = keys.create("acme", name="render farm")
    assert token.startswith(f"sdq_{key.id}_") and len(token) > 48
    stored = b" ".join(v for k in redis_client.scan_iter() if redis_client.type(k) == b"hash"
                       for v in redis_client.hvals(k))  # fmt: skip
    assert token.encode() not in stored and token.split("_", 2)[2].encode() not in stored
    assert keys.authenticate(token) == key
    assert key.outbound_secret.startswith("whsec_") and key.inbound_secret.startswith("whsec_")
    assert key.inbound_secret != key.outbound_secret and "whsec" not in repr(key)


def test_wrong_malformed_and_revoked_tokens_are_refused(keys: KeyStore) -> None:
    key, token = keys.create("acme")
    assert keys.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert keys.authenticate("sdq_nothex_x") is None
    assert keys.authenticate("") is None
    assert keys.revoke(key.id) and keys.authenticate(token) is None
    assert not keys.revoke("0" * 16)


def test_bad_tenant_names_are_refused(keys: KeyStore) -> None:
    for tenant in ("", "a b", "x" * 65, "-lead", "a:b"):
        with pytest.raises(ValueError, match="tenant"):
            keys.create(tenant)


def test_without_a_valid_key_the_api_answers_401(api: TestClient, keys: KeyStore) -> None:
    key, token = keys.create("acme")
    for headers in ({}, {"Authorization": "Bearer sdq_0000000000000000_" + "x" * 43}, {"Authorization": "Basic eA=="}):
        response = api.post("/v1/jobs", json={"prompt": "a cat"}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthenticated"
    assert api.post("/v1/jobs", json={"prompt": "a cat"}, headers=_auth(token)).status_code == 202
    keys.revoke(key.id)
    assert api.get("/v1/jobs", headers=_auth(token)).status_code == 401
    assert api.get("/healthz").status_code == 200  # probes need no key


def test_another_tenants_job_is_not_found(api: TestClient, keys: KeyStore) -> None:
    _, mine = keys.create("acme")
    _, same_tenant = keys.create("acme")
    _, theirs = keys.create("globex")
    job = api.post("/v1/jobs", json={"prompt": "a cat"}, headers=_auth(mine)).json()
    assert job["tenant"] == "acme"
    assert api.get(f"/v1/jobs/{job['id']}", headers=_auth(same_tenant)).status_code == 200
    for method, suffix in (("GET", ""), ("POST", "/cancel")):
        response = api.request(method, f"/v1/jobs/{job['id']}{suffix}", headers=_auth(theirs))
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = api.get(f"/v1/jobs/{job['id']}/events", headers=_auth(theirs))
    assert response.status_code == 404
    assert api.get("/v1/jobs", headers=_auth(theirs)).json()["jobs"] == []
    assert [j["id"] for j in api.get("/v1/jobs", headers=_auth(mine)).json()["jobs"]] == [job["id"]]
    listed = api.get("/v1/jobs", params={"status": "queued"}, headers=_auth(same_tenant)).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    # The other tenant's cancel did nothing.
    assert api.get(f"/v1/jobs/{job['id']}", headers=_auth(mine)).json()["status"] == "queued"


def test_tenant_status_indexes_follow_the_job(api: TestClient, keys: KeyStore) -> None:
    _, token = keys.create("acme")
    job = api.post("/v1/jobs", json={"prompt": "a cat"}, headers=_auth(token)).json()
    api.post(f"/v1/jobs/{job['id']}/cancel", headers=_auth(token))
    canceled = api.get("/v1/jobs", params={"status": "canceled"}, headers=_auth(token)).json()["jobs"]
    queued = api.get("/v1/jobs", params={"status": "queued"}, headers=_auth(token)).json()["jobs"]
    assert [j["id"] for j in canceled] == [job["id"]] and queued == []


def test_open_mode_needs_no_key_and_is_loopback_only(
    redis_server: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with TestClient(make_app(redis_server, tmp_path, auth=False)) as api:
        assert api.post("/v1/jobs", json={"prompt": "a cat"}).status_code == 202
    assert not ApiSettings(host="127.0.0.1", auth="auto").auth_required
    assert ApiSettings(host="0.0.0.0", auth="auto").auth_required
    assert ApiSettings(host="127.0.0.1", auth="required").auth_required
    with pytest.raises(ValueError, match="loopback"):
        _ = ApiSettings(host="0.0.0.0", auth="open").auth_required


def test_sdq_keys_create_list_revoke(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    env = {**os.environ, "SDQ_REDIS_URL": redis_server, "SDQ_DATA_DIR": str(tmp_path)}

    def sdq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producer.cli", "keys", *args], env=env, capture_output=True, text=True, timeout=60
        )

    created = sdq("create", "--tenant", "acme", "--name", "ci", "--rate-per-s", "5", "--max-queued-jobs", "10")
    assert created.returncode == 0, created.stderr
    shown = json.loads(created.stdout)
    key = KeyStore(redis_client).authenticate(shown["token"])
    assert key is not None and key.tenant == "acme" and key.rate_per_s == 5 and key.max_queued_jobs == 10
    listed = sdq("list", "--json")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [shown["id"]]
    assert shown["token"] not in listed.stdout
    assert shown["inbound_secret"] not in listed.stdout and shown["outbound_secret"] not in listed.stdout
    assert sdq("list").returncode == 0
    assert sdq("revoke", shown["id"]).returncode == 0
    assert KeyStore(redis_client).authenticate(shown["token"]) is None
    bad = sdq("create", "--tenant", "a b")
    # A bad option is a configuration error: exit 2 (issue 14: 2 = configuration, 1 = runtime).
    assert bad.returncode == 2 and "tenant" in bad.stderr and "Traceback" not in bad.stderr
