"""The image's HEALTHCHECK script (infra_templates/docker/healthcheck.py) against a real `sdq api`, a real Redis
and a real Prometheus metrics server: healthy when they answer, unhealthy (exit 1, reason on stderr) when not."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from tests.support import Stack, free_port

SCRIPT = Path(__file__).resolve().parents[2] / "infra_templates" / "docker" / "healthcheck.py"


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sdq_healthcheck", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("api")
    env = {**os.environ, "SDQ_REDIS_URL": redis_server, "SDQ_DATA_DIR": str(tmp / "data")}
    stack = Stack(env, tmp / "logs")
    stack.start(webhooks=False, timeout_s=120)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.mark.redis
def test_api_role_probes_healthz(healthcheck: ModuleType, api: Stack) -> None:
    assert healthcheck.check("api", {"SDQ_PORT": str(api.port)}) == []
    problems = healthcheck.check("api", {"SDQ_PORT": str(free_port())})
    assert problems and "/healthz" in problems[0]


@pytest.mark.redis
def test_other_roles_probe_redis(healthcheck: ModuleType, redis_server: str) -> None:
    for role in ("worker", "controller", "webhooks"):
        assert healthcheck.check(role, {"SDQ_REDIS_URL": redis_server}) == []
    dead = f"redis://127.0.0.1:{free_port()}/0"
    assert healthcheck.check("worker", {"SDQ_REDIS_URL": dead}) == ["Redis does not answer PING"]


@pytest.mark.redis
def test_metrics_port_is_probed_when_configured(healthcheck: ModuleType, redis_server: str) -> None:
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=CollectorRegistry())
    try:
        assert (
            healthcheck.check("controller", {"SDQ_REDIS_URL": redis_server, "SDQ_CONTROLLER_METRICS_PORT": str(port)})
            == []
        )
        assert healthcheck.check("worker", {"SDQ_REDIS_URL": redis_server, "SDQ_METRICS_PORT": str(port)}) == []
        # Each role reads its own setting: the worker's port means nothing to the controller.
        assert healthcheck.check("controller", {"SDQ_METRICS_PORT": str(free_port())}) == []
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    problems = healthcheck.check("controller", {"SDQ_CONTROLLER_METRICS_PORT": str(port)})
    assert problems == [f"GET http://127.0.0.1:{port}/metrics failed"]


def test_main_exits_1_with_the_reason(
    healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SDQ_PORT", str(free_port()))
    assert healthcheck.main(["sdq-healthcheck", "api"]) == 1
    assert "sdq-healthcheck (api): GET http://127.0.0.1:" in capsys.readouterr().err
