"""Image inputs through the real stack: HTTP API → Redis/Dramatiq → `sdq worker` (device process) → local storage.

Each mode runs from a plain JSON request (as `curl` sends it) with a data URL or an upload id; the worker resolves
the inputs once (kept under `inputs/<job>/`), runs the mode's pipeline and stores the output."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from producer import Client, JobStatus
from tests.gpu_worker.inputs_support import photo, square_mask
from tests.support import Stack, start_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(image)).decode()


@pytest.fixture(scope="module")
def storage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("objects")


@pytest.fixture(scope="module")
def stack(
    redis_server: str, model_cache: Path, storage_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(
        tmp_path_factory.mktemp("inputs"), redis_server, model_cache, SDQ_STORAGE_URL=storage_dir.as_uri()
    )
    running.start_worker()
    yield running
    running.stop()


def _run(stack: Stack, **fields: Any) -> tuple[Any, list[Image.Image]]:
    body = {"prompt": "a photo of a cat", "model": "tiny", "width": 64, "height": 64, "steps": 4, "seed": 7, **fields}
    answer = httpx.post(f"{stack.api_url}/v1/jobs", json=body, timeout=30)
    assert answer.status_code in (200, 201, 202), answer.text
    with Client(stack.api_url, timeout_s=30) as client:
        record = client.wait(answer.json()["id"], timeout_s=180)
    assert record.status is JobStatus.SUCCEEDED, record.error
    images = [
        Image.open(io.BytesIO(httpx.get(output.url, timeout=30).content)).convert("RGB") for output in record.outputs
    ]
    return record, images


def _upload(stack: Stack, image: Image.Image) -> dict[str, str]:
    grant = httpx.post(f"{stack.api_url}/v1/uploads", json={"content_type": "image/png"}, timeout=30).json()
    assert grant["method"] == "PUT"
    sent = httpx.put(grant["url"], content=_png(image), headers=grant["headers"], timeout=30)
    assert sent.status_code in (200, 201, 204), sent.text
    return dict(grant["image"])


def test_img2img_from_a_data_url_keeps_the_input_at_strength_0_and_repaints_it_above(
    stack: Stack, storage_dir: Path
) -> None:
    record, [kept] = _run(stack, image=_data_url(photo()), strength=0.0)
    assert np.array_equal(np.asarray(kept), np.asarray(photo()))
    assert (storage_dir / "inputs" / record.id / "image.png").is_file()  # resolved once, kept for later attempts
    _, [repainted] = _run(stack, image=_data_url(photo()), strength=0.6)
    assert np.abs(np.asarray(repainted, dtype=int) - np.asarray(photo(), dtype=int)).mean() > 5


def test_inpainting_from_uploads_keeps_pixels_outside_the_mask(stack: Stack) -> None:
    _, [image] = _run(stack, image=_upload(stack, photo()), mask_image=_upload(stack, square_mask()), strength=1.0)
    difference = np.abs(np.asarray(image, dtype=int) - np.asarray(photo(), dtype=int)).max(axis=-1)
    inside = np.asarray(square_mask()) > 127
    assert difference[~inside].max() <= 2 and difference[inside].mean() > 20


def test_controlnet_with_canny_on_the_worker_and_an_ip_adapter(stack: Stack) -> None:
    unit = {"model": "tiny-controlnet", "image": _data_url(photo(3)), "preprocess": "canny"}
    _, [plain] = _run(stack)
    _, [controlled] = _run(stack, controlnets=[unit])
    _, [other] = _run(stack, controlnets=[{**unit, "image": _data_url(photo(3).rotate(90))}])
    assert np.abs(np.asarray(controlled, dtype=int) - np.asarray(plain, dtype=int)).mean() > 0.2
    assert np.abs(np.asarray(controlled, dtype=int) - np.asarray(other, dtype=int)).mean() > 0.2
    _, [referenced] = _run(stack, ip_adapter={"model": "tiny-ip-adapter", "image": _data_url(photo(5)), "scale": 1.0})
    assert np.abs(np.asarray(referenced, dtype=int) - np.asarray(plain, dtype=int)).mean() > 1
    plus = {"model": "tiny-ip-adapter-plus", "image": _data_url(photo(5)), "scale": 1.0}  # reads hidden states
    _, [resampled] = _run(stack, ip_adapter=plus)
    assert np.abs(np.asarray(resampled, dtype=int) - np.asarray(referenced, dtype=int)).mean() > 1


def test_a_catalog_controlnet_name_loads_its_source_on_the_worker(stack: Stack) -> None:
    # `canny` is the built-in catalog's name for tiny's `tiny-controlnet`: the same weights, so the same picture.
    unit = {"model": "tiny-controlnet", "image": _data_url(photo(3)), "preprocess": "canny"}
    _, [by_source] = _run(stack, controlnets=[unit])
    record, [by_name] = _run(stack, controlnets=[{**unit, "model": "canny"}])
    assert record.request.controlnets[0].model == "canny"
    assert np.array_equal(np.asarray(by_name), np.asarray(by_source))
