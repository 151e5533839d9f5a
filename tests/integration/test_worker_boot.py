"""A real `sdq worker` serves its metrics (health checks pass) while its preloaded model is still downloading, and
says when it is ready: the model comes from a Hub-shaped server that holds every file download until released."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.hub import HubServer
from tests.support import free_port, start_stack, wait_for


def _ready(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sdq_worker_ready":
                return sample.value
    return None


@pytest.mark.redis
def test_the_metrics_answer_during_preload_and_report_ready_after(
    redis_server: str, model_cache: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_cache / "tiny", repo)
    port = free_port()
    with HubServer({"sdq-tests/tiny-on-hub": repo}) as hub:
        hub.open.clear()  # the preload's downloads wait
        stack = start_stack(tmp_path, redis_server, tmp_path / "models", HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.url)
        try:
            stack.start_worker(
                SDQ_PRELOAD_MODELS="sdq-tests/tiny-on-hub",
                SDQ_METRICS_PORT=str(port),
                SDQ_METRICS_HOST="127.0.0.1",
                HF_HOME=str(tmp_path / "hf-home"),
            )
            assert wait_for(lambda: _ready(port) is not None, timeout_s=120) and _ready(port) == 0.0
            assert not hub.downloads()  # still held: the worker answers while its model is on the way
            hub.open.set()
            assert wait_for(lambda: _ready(port) == 1.0, timeout_s=180)
            assert "model_index.json" in hub.downloads("sdq-tests/tiny-on-hub")
        finally:
            stack.stop()
