"""Every model family through the real stack: SDK → `sdq api` → Redis/Dramatiq → `sdq worker` → storage.

The stack reads a catalog file (`SDQ_MODEL_CATALOG`): the built-in catalog plus names of its own for the tiny
models, which the worker resolves to their sources."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from PIL import Image

from producer import Client, JobStatus
from producer.catalog import builtin_catalog_text
from producer.client import ApiError
from storage import open_store
from tests.support import Stack, start_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FAMILIES = [("tiny", "sd"), ("tiny-sdxl", "sdxl"), ("tiny-sd3", "sd3"), ("tiny-flux", "flux")]
#: Catalog names of this deployment's own, each a tiny model under another name: (name, source, family).
HOUSE = [("house-sd", "tiny", "sd"), ("house-sdxl", "tiny-sdxl", "sdxl"), ("house-sd3", "tiny-sd3", "sd3")]
HOUSE += [("house-flux", "tiny-flux", "flux"), ("house-refiner", "tiny-sdxl-refiner", "sdxl")]
#: A catalog entry that names the wrong family: only the worker, which reads the loaded pipeline, can tell.
MISLABELLED = "mislabelled-flux"


def _catalog(path: Path) -> Path:
    catalog = yaml.safe_load(builtin_catalog_text())
    for name, source, family in HOUSE:
        catalog["models"][name] = {"source": source, "family": family, "refiner": name == "house-refiner"}
    catalog["models"][MISLABELLED] = {"source": "tiny-flux", "family": "sd"}
    path.write_text(yaml.safe_dump(catalog))
    return path


@pytest.fixture(scope="module")
def storage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("objects")


@pytest.fixture(scope="module")
def stack(
    redis_server: str, model_cache: Path, storage_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("families")
    catalog = str(_catalog(tmp / "models.yaml"))
    running = start_stack(
        tmp, redis_server, model_cache, SDQ_STORAGE_URL=storage_dir.as_uri(), SDQ_MODEL_CATALOG=catalog
    )
    running.start_worker()
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with stack.client() as sdk:
        yield sdk


@pytest.mark.parametrize(("model", "family"), FAMILIES + [(name, family) for name, _, family in HOUSE[:4]])
def test_a_job_of_each_family_runs_end_to_end(client: Client, storage_dir: Path, model: str, family: str) -> None:
    record = client.wait(
        client.submit("a photo of a cat", model=model, width=64, height=64, steps=3, seed=3, num_images=2).id,
        timeout_s=120,
    )
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.progress is not None and record.progress.step == record.progress.total >= 3
    assert [output.seed for output in record.outputs] == [3, 4]
    # The record says which family and dtype ran it (float32: this is a CPU worker).
    assert (record.family, record.dtype) == (family, "float32")
    for output in record.outputs:
        assert output.url
        image = Image.open(io.BytesIO(httpx.get(output.url).content))
        assert image.size == (64, 64)
        # The worker records which family and dtype rendered each image (float32: this is a CPU worker).
        stored = open_store(storage_dir.as_uri()).head(output.key)
        assert (stored.metadata["family"], stored.metadata["dtype"]) == (family, "float32")


@pytest.mark.parametrize(
    ("base", "refiner_model"), [("tiny-sdxl", "tiny-sdxl-refiner"), ("house-sdxl", "house-refiner")]
)
def test_an_sdxl_job_with_a_refiner_runs_end_to_end(client: Client, base: str, refiner_model: str) -> None:
    refiner = {"model": refiner_model, "switch_at": 0.5}
    record = client.wait(
        client.submit("a fox", model=base, width=64, height=64, steps=4, seed=1, refiner=refiner).id,
        timeout_s=120,
    )
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.progress is not None and record.progress.step == record.progress.total == 4


def test_a_flux_job_with_a_negative_prompt_is_refused_at_submission(client: Client) -> None:
    with pytest.raises(ApiError) as caught:
        client.submit("a fox", model="tiny-flux", width=64, height=64, steps=2, negative_prompt="blurry")
    assert caught.value.status == 422 and [f["field"] for f in caught.value.fields] == ["negative_prompt"]


def test_a_flux_job_with_a_negative_prompt_fails_as_invalid_input(client: Client) -> None:
    # The catalog calls it SD, so the API lets the negative prompt through; the worker sees a Flux pipeline.
    record = client.wait(
        client.submit("a fox", model=MISLABELLED, width=64, height=64, steps=2, negative_prompt="blurry").id,
        timeout_s=120,
    )
    assert record.status is JobStatus.FAILED and record.error is not None
    assert record.error.code == "invalid_input" and record.error.message.startswith("negative_prompt: ")
