"""Schemathesis against `/openapi.json` of the real app (real Redis, API keys required): whatever it sends, no
5xx, and every response matches the schema the API publishes (status codes, headers, bodies).

Twice: through Schemathesis' own CLI against a real `sdq api` process over HTTP (every phase, stateful
included, and every check but `positive_data_acceptance`), and through its Python API with Hypothesis directly
in-process (its pytest plugin does not support pytest 9 yet), a bounded number of examples per operation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from producer.apikeys import KeyStore, Role
from producer.localstack import LocalStack
from tests.support import make_app

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 25
#: Rules JSON Schema cannot state (width × height ≤ 1536², a prompt that is not only whitespace, the server's
#: model allow-list) make some schema-valid requests a 422; "schema-valid data is accepted" cannot hold for them.
NOT_CHECKED = [positive_data_acceptance]
#: The CLI run: examples per operation and phase, and a fixed seed so that a failure reproduces.
CLI_EXAMPLES = 20
CLI_SEED = "20261214"


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


@pytest.fixture(scope="module")
def served(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, str]]:
    """`sdq api` as a process (keys required, no rate limit), and an admin key: every route, fleet ones too."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    token = KeyStore(client).create("fuzz-cli", role=Role.ADMIN, max_queued_jobs=0)[1]
    tmp = tmp_path_factory.mktemp("fuzz-cli")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SDQ_")},
        "SDQ_REDIS_URL": redis_server,
        "SDQ_DATA_DIR": str(tmp / "data"),
        "SDQ_AUTH": "required",
        "SDQ_RATE_LIMIT_PER_S": "0",
    }
    stack = LocalStack(env, tmp / "logs").start(webhooks=False)
    try:
        yield stack, token
    finally:
        stack.stop()


@pytest.mark.timeout(1200)
def test_schemathesis_cli_finds_nothing_over_real_http(served: tuple[LocalStack, str], tmp_path: Path) -> None:
    stack, token = served
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{stack.api_url}/openapi.json",
        "--phases=examples,coverage,fuzzing,stateful",
        "--checks=all",
        f"--exclude-checks={positive_data_acceptance.__name__}",
        f"--max-examples={CLI_EXAMPLES}",
        f"--seed={CLI_SEED}",
        "--workers=1",  # its threads race importing its own transports (ImportError) on 4.32
        "--no-color",
        "--header",
        f"Authorization: Bearer {token}",
    ]
    # Run in a scratch directory: the CLI keeps a cache of crashes (.schemathesis/) in its working directory.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1100, check=False)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-12000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in report, report[-4000:]
