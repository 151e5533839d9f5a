"""Every model family through the real stack: SDK → `sdq api` → Redis/Dramatiq → `sdq worker` → storage."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from producer import Client, JobStatus
from storage import open_store
from tests.support import Stack, start_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FAMILIES = [("tiny", "sd"), ("tiny-sdxl", "sdxl"), ("tiny-sd3", "sd3"), ("tiny-flux", "flux")]


@pytest.fixture(scope="module")
def storage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("objects")


@pytest.fixture(scope="module")
def stack(
    redis_server: str, model_cache: Path, storage_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(
        tmp_path_factory.mktemp("families"), redis_server, model_cache, SDQ_STORAGE_URL=storage_dir.as_uri()
    )
    running.start_worker()
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with stack.client() as sdk:
        yield sdk


@pytest.mark.parametrize(("model", "family"), FAMILIES)
def test_a_job_of_each_family_runs_end_to_end(client: Client, storage_dir: Path, model: str, family: str) -> None:
    record = client.wait(
        client.submit("a photo of a cat", model=model, width=64, height=64, steps=3, seed=3, num_images=2).id,
        timeout_s=120,
    )
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.progress is not None and record.progress.step == record.progress.total >= 3
    assert [output.seed for output in record.outputs] == [3, 4]
    for output in record.outputs:
        assert output.url
        image = Image.open(io.BytesIO(httpx.get(output.url).content))
        assert image.size == (64, 64)
        # The worker records which family and dtype rendered each image (float32: this is a CPU worker).
        stored = open_store(storage_dir.as_uri()).head(output.key)
        assert (stored.metadata["family"], stored.metadata["dtype"]) == (family, "float32")


def test_an_sdxl_job_with_a_refiner_runs_end_to_end(client: Client) -> None:
    refiner = {"model": "tiny-sdxl-refiner", "switch_at": 0.5}
    record = client.wait(
        client.submit("a fox", model="tiny-sdxl", width=64, height=64, steps=4, seed=1, refiner=refiner).id,
        timeout_s=120,
    )
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.progress is not None and record.progress.step == record.progress.total == 4


def test_a_flux_job_with_a_negative_prompt_fails_as_invalid_input(client: Client) -> None:
    record = client.wait(
        client.submit("a fox", model="tiny-flux", width=64, height=64, steps=2, negative_prompt="blurry").id,
        timeout_s=120,
    )
    assert record.status is JobStatus.FAILED and record.error is not None
    assert record.error.code == "invalid_input" and record.error.message.startswith("negative_prompt: ")
