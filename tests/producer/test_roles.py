"""Roles over real HTTP (`sdq api` as a process, keys required, a real Redis): every route of the OpenAPI document
is called with no key and with a tenant, an admin and a scaling key. Fleet-wide views answer only admin keys (and
the scaling key, for `GET /v1/scaling`); the scaling key can do nothing else; a tenant sees its own costs only.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from producer.apikeys import KeyStore, Role
from producer.cost import Capacity, UsageLedger
from producer.localstack import LocalStack

pytestmark = pytest.mark.redis

PRICES = {"g5.xlarge": {"spot": 0.5, "on_demand": 1.2}}
#: Routes a key with no role to them must be refused: the fleet-wide views.
FLEET = {("GET", "/v1/costs"), ("GET", "/v1/scaling"), ("GET", "/v1/fleet/history"), ("GET", "/v1/fleet/workers")}
SCALING_ONLY = {("GET", "/v1/scaling")}


@dataclass(frozen=True)
class Keys:
    tenant: str
    other: str
    admin: str
    scaling: str


@pytest.fixture(scope="module")
def api(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("roles")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SDQ_")},
        "SDQ_REDIS_URL": redis_server,
        "SDQ_DATA_DIR": str(tmp / "data"),
        "SDQ_AUTH": "required",
        "SDQ_PRICES": json.dumps(PRICES),
        "SDQ_RATE_LIMIT_PER_S": "0",
    }
    stack = LocalStack(env, tmp / "logs").start(webhooks=False)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def tokens(api: LocalStack, redis_server: str) -> Keys:
    store = KeyStore(redis.Redis.from_url(redis_server))
    return Keys(
        tenant=store.create("acme")[1],
        other=store.create("globex")[1],
        admin=store.create("ops", role=Role.ADMIN)[1],
        scaling=store.create("keda", role=Role.SCALING)[1],
    )


def _operations(api: LocalStack) -> list[tuple[str, str]]:
    """Every (method, path) the API documents that needs a key (its OpenAPI `security`)."""
    document = httpx.get(f"{api.api_url}/openapi.json").json()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("security"):
                found.append((method.upper(), path))
    return found


def _call(api: LocalStack, method: str, path: str, token: str | None) -> int:
    url = api.api_url + re.sub(r"\{[^}]+\}", "0" * 32, path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    with httpx.Client(timeout=10) as client, client.stream(method, url, headers=headers, **body) as response:
        return response.status_code  # an event stream is left unread: its status is the answer


def test_every_keyed_route_needs_a_key_and_only_admins_see_the_fleet(api: LocalStack, tokens: Keys) -> None:
    operations = _operations(api)
    assert set(operations) >= FLEET, operations  # the fleet views are documented and keyed
    assert len(operations) >= 15
    for method, path in operations:
        where = f"{method} {path}"
        assert _call(api, method, path, None) == 401, where
        assert _call(api, method, path, "sdq_" + "0" * 16 + "_" + "x" * 43) == 401, where
        tenant, admin, scaling = (_call(api, method, path, t) for t in (tokens.tenant, tokens.admin, tokens.scaling))
        assert admin != 403 and admin < 500, (where, admin)
        assert (tenant == 403) == ((method, path) in FLEET), (where, tenant)
        assert tenant < 500, (where, tenant)
        assert (scaling == 403) == ((method, path) not in SCALING_ONLY), (where, scaling)


def test_the_scaling_key_reads_scaling_and_nothing_else(api: LocalStack, tokens: Keys) -> None:
    scaling = {"Authorization": f"Bearer {tokens.scaling}"}
    answer = httpx.get(f"{api.api_url}/v1/scaling", headers=scaling)
    assert answer.status_code == 200 and "work_remaining" in answer.json()
    refused = httpx.post(f"{api.api_url}/v1/jobs", headers=scaling, json={"prompt": "a cat"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "scaling" in refused.json()["error"]["message"]


def _submit(api: LocalStack, token: str) -> str:
    response = httpx.post(f"{api.api_url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}, json={"prompt": "x"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _job_cost(api: LocalStack, token: str, job_id: str) -> float:
    record = httpx.get(f"{api.api_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}).json()
    return float(record["cost"]["total_usd"])


def test_a_tenant_sees_the_sum_of_its_own_job_costs_and_admins_see_any(
    api: LocalStack, tokens: Keys, redis_server: str
) -> None:
    ledger = UsageLedger(redis.Redis.from_url(redis_server))
    now = time.time()
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    mine = [_submit(api, tokens.tenant) for _ in range(2)]
    theirs = [_submit(api, tokens.other)]
    # What a worker records: busy seconds per job, and the fleet's uptime (idle and cold starts included).
    for job_id, seconds in zip([*mine, *theirs], (60.0, 30.0, 90.0), strict=True):
        assert ledger.add_job(job_id, "g5.xlarge", Capacity.SPOT, seconds, at=now)
    ledger.add_uptime("g5.xlarge", Capacity.SPOT, 360.0, at=now)

    def view(token: str, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{api.api_url}/v1/costs/tenant", headers=headers, params={"day": day, **params})

    acme = view(tokens.tenant).json()
    assert acme["tenant"] == "acme" and acme["jobs"] == 2 and acme["gpu_s"] == pytest.approx(90.0)
    assert acme["total_usd"] == pytest.approx(sum(_job_cost(api, tokens.tenant, j) for j in mine))
    assert acme["total_usd"] == pytest.approx(0.5 * 360 / 3600 * 90 / 180)  # its share of the day's fleet bill
    assert view(tokens.tenant, tenant="globex").status_code == 403  # another tenant's: admins only
    globex = view(tokens.admin, tenant="globex").json()
    assert globex["tenant"] == "globex" and globex["jobs"] == 1
    fleet = httpx.get(
        f"{api.api_url}/v1/costs", headers={"Authorization": f"Bearer {tokens.admin}"}, params={"day": day}
    )
    assert acme["total_usd"] + globex["total_usd"] == pytest.approx(fleet.json()["fleet_usd"])
    assert view(tokens.tenant, day="2001-01-01").json()["jobs"] == 0
    assert view(tokens.scaling).status_code == 403


@pytest.mark.parametrize("day", ["0", "1e9", "20240101", "2024-02-30", "2024-1-1", "today"])
def test_a_day_that_is_not_yyyy_mm_dd_is_a_422(api: LocalStack, tokens: Keys, day: str) -> None:
    for path, token in (("/v1/costs", tokens.admin), ("/v1/costs/tenant", tokens.tenant)):
        response = httpx.get(f"{api.api_url}{path}", headers={"Authorization": f"Bearer {token}"}, params={"day": day})
        assert response.status_code == 422, (path, day, response.text)
        assert response.json()["error"]["fields"][0]["field"] == "day"


def test_roles_survive_the_key_record(redis_server: str, tmp_path: Path) -> None:
    store = KeyStore(redis.Redis.from_url(redis_server))
    key, token = store.create("keda", role=Role.SCALING)
    assert store.get(key.id) == key and key.role is Role.SCALING
    assert store.authenticate(token) == key
    legacy, _ = store.create("old")
    assert store.get(legacy.id) is not None and store.get(legacy.id).role is Role.TENANT  # type: ignore[union-attr]
