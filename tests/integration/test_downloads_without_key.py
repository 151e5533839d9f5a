"""Downloads never carry the API's key to storage: with keys required, `Client.download`, `AsyncClient.download`,
`sdq submit --out` and `sdq batch` fetch every image from SeaweedFS (which checks SigV4) through a recording
proxy that refuses, as real S3 does, a presigned request that also carries an `Authorization` header.

The API presigns against the proxy (its `SDQ_STORAGE_URL` names it as the endpoint), so every download passes
through it; the worker writes to SeaweedFS directly, so the proxy sees nothing but downloads.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from producer import AsyncClient, Client, JobRecord, JobStatus
from producer.apikeys import KeyStore
from tests.emulators import S3Server
from tests.recording_proxy import RecordingProxy, Seen
from tests.support import Stack, start_stack

pytestmark = [pytest.mark.redis, pytest.mark.s3, pytest.mark.slow]

BUCKET = "sdq-downloads"
SMALL = {"width": 64, "height": 64, "steps": 2}
SMALL_ARGS = ["--width", "64", "--height", "64", "--steps", "2"]
SDQ = [sys.executable, "-m", "producer.cli"]


@dataclass
class Setup:
    stack: Stack
    proxy: RecordingProxy
    token: str


@pytest.fixture(scope="module")
def setup(
    seaweedfs_server: S3Server, redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    connection = redis.Redis.from_url(redis_server)
    connection.flushdb()
    _, token = KeyStore(connection).create("downloader")
    seaweedfs_server.create_bucket(BUCKET)
    prefix = f"dl/{uuid.uuid4().hex}"
    direct = seaweedfs_server.url(BUCKET, prefix)
    with RecordingProxy(seaweedfs_server.endpoint_url) as proxy:
        through_proxy = replace(seaweedfs_server, endpoint_url=proxy.url).url(BUCKET, prefix)
        secrets = {
            "SDQ_STORAGE_AWS_ACCESS_KEY_ID": seaweedfs_server.access_key_id,
            "SDQ_STORAGE_AWS_SECRET_ACCESS_KEY": seaweedfs_server.secret_access_key,
        }
        stack = start_stack(
            tmp_path_factory.mktemp("downloads"),
            redis_server,
            model_cache,
            SDQ_AUTH="required",
            SDQ_STORAGE_URL=through_proxy,
            **secrets,
        )
        try:
            stack.start_worker(SDQ_STORAGE_URL=direct)
            yield Setup(stack, proxy, token)
        finally:
            stack.stop()


def _since(proxy: RecordingProxy, mark: int) -> list[Seen]:
    return proxy.recorded()[mark:]


def _assert_only_keyless_downloads(seen: list[Seen], images: int) -> None:
    assert len(seen) == images, [(s.method, s.path, s.status) for s in seen]
    for request in seen:
        assert request.method == "GET" and request.presigned, request
        assert "authorization" not in request.headers, f"the API key reached storage: {request.path}"
        assert not any("sdq_" in value for value in request.headers.values()), request.headers
        assert request.status == 200, request


def _png(path: Path) -> Image.Image:
    image = Image.open(io.BytesIO(path.read_bytes()))
    image.load()
    return image


def test_the_proxy_refuses_a_presigned_request_that_carries_a_key_as_real_s3_does(setup: Setup) -> None:
    """The guard itself: what the SDK used to send (presigned query + Bearer header) is refused here."""
    with Client(setup.stack.api_url, api_key=setup.token) as client:
        record = client.wait(client.submit("guard", **SMALL).id, timeout_s=180)
    assert record.status is JobStatus.SUCCEEDED, record.error
    url = record.outputs[0].url
    assert url is not None and url.startswith(setup.proxy.url)
    refused = httpx.get(url, headers={"Authorization": f"Bearer {setup.token}"})
    assert refused.status_code == 400 and b"Only one auth mechanism allowed" in refused.content
    assert httpx.get(url).status_code == 200


def test_client_download_fetches_every_image_without_the_key(setup: Setup, tmp_path: Path) -> None:
    with Client(setup.stack.api_url, api_key=setup.token) as client:
        record = client.wait(client.submit("two foxes", num_images=2, seed=5, **SMALL).id, timeout_s=180)
        assert record.status is JobStatus.SUCCEEDED, record.error
        mark = len(setup.proxy.recorded())
        files = client.download(record, tmp_path)
    assert [p.name for p in files] == [f"{record.id}-0.png", f"{record.id}-1.png"]
    assert all(_png(p).size == (64, 64) for p in files)
    _assert_only_keyless_downloads(_since(setup.proxy, mark), images=2)


def test_async_client_download_fetches_without_the_key(setup: Setup, tmp_path: Path) -> None:
    async def scenario() -> tuple[JobRecord, list[Path], int]:
        async with AsyncClient(setup.stack.api_url, api_key=setup.token) as client:
            record = await client.wait((await client.submit("async fox", **SMALL)).id, timeout_s=180)
            mark = len(setup.proxy.recorded())
            return record, await client.download(record, tmp_path), mark

    record, files, mark = asyncio.run(scenario())
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert [p.name for p in files] == [f"{record.id}-0.png"] and _png(files[0]).format == "PNG"
    _assert_only_keyless_downloads(_since(setup.proxy, mark), images=1)


def test_sdq_submit_out_fetches_without_the_key(setup: Setup, tmp_path: Path) -> None:
    mark = len(setup.proxy.recorded())
    result = subprocess.run(
        [*SDQ, "submit", "a cli fox", "--num-images", "2", *SMALL_ARGS, "--out", str(tmp_path)],
        env={**setup.stack.env, "SDQ_API_KEY": setup.token},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    record = JobRecord.model_validate_json(result.stdout)
    assert record.status is JobStatus.SUCCEEDED
    assert all(_png(tmp_path / f"{record.id}-{i}.png").size == (64, 64) for i in range(2))
    _assert_only_keyless_downloads(_since(setup.proxy, mark), images=2)


def test_sdq_batch_fetches_without_the_key(setup: Setup, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"batch {i}", "seed": i}) + "\n" for i in range(2)))
    mark = len(setup.proxy.recorded())
    result = subprocess.run(
        [*SDQ, "batch", str(prompts), "--out", str(tmp_path / "out"), *SMALL_ARGS, "--poll-interval-s", "0.2"],
        env={**setup.stack.env, "SDQ_API_KEY": setup.token},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(_png(tmp_path / "out" / row["file"]).format == "PNG" for row in rows)
    _assert_only_keyless_downloads(_since(setup.proxy, mark), images=2)
