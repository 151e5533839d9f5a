"""`GET /v1/models` and `sdq models` over a real stack: a real worker subprocess reports, on its heartbeat clock,
which catalog models it has loaded and which its machine has cached; the report dies with the worker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer import Client, JobStatus
from producer.holdings import ModelInfo
from tests.support import Stack, start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: Beats (and reports) every quarter of it.
HEARTBEAT_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def stack(redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("models-e2e")
    running = start_stack(
        tmp, redis_server, model_cache, SDQ_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S), SDQ_LEASE_S="5"
    )
    yield running
    running.stop()


def _models(client: Client) -> dict[str, ModelInfo]:
    return {model.name: model for model in client.models().models}


def test_the_catalog_says_which_models_a_worker_holds(stack: Stack) -> None:
    with stack.client() as client:
        listed = _models(client)
        assert {"sd15", "sdxl", "flux-schnell", "tiny", "tiny-sd3"} <= set(listed)
        assert listed["flux-schnell"].defaults.steps == 4 and listed["flux-schnell"].limits.guidance is False
        assert not any(model.loaded or model.cached for model in listed.values())  # no worker yet

        worker = stack.start_worker(SDQ_PRELOAD_MODELS="tiny")
        wait_for(lambda: _models(client)["tiny"].loaded, timeout_s=120)
        assert _models(client)["tiny"].loaded_workers == 1

        # Another model takes the only slot (SDQ_MAX_LOADED_MODELS=1): it is loaded, the first one only cached.
        job = client.submit("a fox", model="tiny-sd3", width=64, height=64, steps=2)
        assert client.wait(job.id, timeout_s=120).status is JobStatus.SUCCEEDED
        wait_for(lambda: _models(client)["tiny-sd3"].loaded, timeout_s=30)
        listed = _models(client)
        assert (listed["tiny"].loaded, listed["tiny"].cached) == (False, True)
        assert (listed["tiny-sd3"].cached_workers, listed["sd15"].cached, listed["sd15"].loaded) == (1, False, False)

        printed = subprocess.run(
            [sys.executable, "-m", "producer.cli", "models"],
            env={**stack.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        rows = {line.split()[0]: line for line in printed.splitlines()[1:]}
        assert "loaded (1)" in rows["tiny-sd3"] and "cached (1)" in rows["tiny"] and rows["sd15"].split()[2] == "-"
        assert "stabilityai/stable-diffusion-xl-base-1.0" in rows["sdxl"]

        # A worker that stops takes its report with it.
        worker.terminate()
        worker.wait(timeout=60)
        assert not any(model.loaded or model.cached for model in _models(client).values())
