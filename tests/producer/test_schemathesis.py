"""Schemathesis against `/openapi.json` of the real app (real Redis, API keys required): whatever it sends, no
5xx, and every response matches the schema the API publishes (status codes, headers, bodies).

Driven through Schemathesis' Python API with Hypothesis directly (its pytest plugin does not support pytest 9
yet), a bounded number of examples per operation.
"""

from __future__ import annotations

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from producer.apikeys import KeyStore
from tests.support import make_app

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 25
#: Rules JSON Schema cannot state (width × height ≤ 1536², a prompt that is not only whitespace, the server's
#: model allow-list) make some schema-valid requests a 422; "schema-valid data is accepted" cannot hold for them.
NOT_CHECKED = [positive_data_acceptance]


@pytest.fixture(scope="module")
def token(redis_server: str) -> str:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    return KeyStore(client).create("fuzz", max_queued_jobs=0)[1]


@pytest.fixture(scope="module")
def api_schema(redis_server: str, token: str, tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    app = make_app(redis_server, tmp_path_factory.mktemp("fuzz"))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_the_api_honours_its_schema(api_schema: schemathesis.BaseSchema, token: str) -> None:
    failures: dict[str, str] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, excluded_checks=NOT_CHECKED)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_the_schema_declares_auth_errors_and_limits(api_schema: schemathesis.BaseSchema) -> None:
    raw = api_schema.raw_schema
    post = raw["paths"]["/v1/jobs"]["post"]
    assert {"401", "422", "429"} <= set(post["responses"])
    assert any("HTTPBearer" in scheme for scheme in raw["components"]["securitySchemes"])
    batches = raw["paths"]["/v1/batches"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-ndjson"} <= set(batches)
