"""The SDK and the CLI with image inputs, against a real `sdq api` (keys required, local storage) whose upload links
go through a recording proxy: files are uploaded straight to storage, and the API key never goes there."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rich.console import Console

from producer import AsyncClient, Client, keys
from producer.apikeys import KeyStore
from producer.batch_cli import BatchRun, read_lines
from producer.errors import ProducerError
from producer.jobs import JobRecord, JobStatus, UploadCreated
from tests.inputs.images import data_url, gradient_png, png
from tests.storage.flaky_proxy import flaky_proxy, proxy_url
from tests.support import Stack

pytestmark = pytest.mark.redis

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def stack(redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("sdk-inputs")
    env = {
        **os.environ,
        "SDQ_REDIS_URL": redis_server,
        "SDQ_DATA_DIR": str(tmp / "data"),
        "SDQ_MODEL_CACHE_DIR": str(model_cache),
        "SDQ_AUTH": "required",
        "HF_HUB_OFFLINE": "1",
    }
    running = Stack(env, tmp / "logs", log_level="info")
    with flaky_proxy(running.api_url, failures=0) as proxy:
        # Upload links name the public URL: the proxy, which forwards to the API's file route and records.
        running.env["SDQ_PUBLIC_URL"] = proxy_url(proxy, running.api_url)
        running.start(webhooks=False)
        running.proxy = proxy  # type: ignore[attr-defined]
        yield running
        running.stop()


@pytest.fixture(scope="module")
def token(stack: Stack, redis_server: str) -> str:
    return KeyStore(redis.Redis.from_url(redis_server)).create("acme")[1]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(gradient_png(64, 64))
    return path


def _storage_requests(stack: Stack) -> list[tuple[str, str, dict[str, str]]]:
    return list(stack.proxy.seen)  # type: ignore[attr-defined]


def test_upload_sends_the_file_to_storage_without_the_api_key(stack: Stack, token: str, photo: Path) -> None:
    before = len(_storage_requests(stack))
    with Client(stack.api_url, api_key=token) as client:
        grant = client.upload(photo)
        record = client.submit("a cat", image=grant, **SMALL)

    assert isinstance(grant, UploadCreated) and grant.method == "PUT" and grant.content_type == "image/png"
    assert record.request.image is not None and record.request.image.upload == grant.id
    sent = _storage_requests(stack)[before:]
    assert [(method, path.split("?")[0]) for method, path, _ in sent] == [("PUT", f"/v1/files/uploads/{grant.id}")]
    assert "authorization" not in sent[0][2] and sent[0][2]["content-type"] == "image/png"


def test_submit_takes_a_path_bytes_a_url_an_upload_id_or_an_upload(stack: Stack, token: str, photo: Path) -> None:
    with Client(stack.api_url, api_key=token) as client:
        grant = client.upload(png(64, 64, color=(1, 2, 3)))
        records = [
            client.submit("a cat", image=photo, strength=0.6, **SMALL),
            client.submit("a cat", image=photo.read_bytes(), **SMALL),
            client.submit("a cat", image=str(photo), **SMALL),
            client.submit("a cat", image=grant.id, **SMALL),
            client.submit("a cat", image=grant, **SMALL),
            client.submit("a cat", image="https://images.example.com/cat.png", **SMALL),
            client.submit("a cat", image=data_url(png()), **SMALL),
        ]
    images = [record.request.image for record in records]
    assert all(image is not None for image in images)
    assert [image.kind for image in images if image] == ["upload"] * 5 + ["url", "upload"]
    assert images[3] == images[4] and images[3] is not None and images[3].upload == grant.id
    assert images[5] is not None and images[5].url == "https://images.example.com/cat.png"
    assert records[0].request.strength == 0.6


def test_one_image_used_twice_in_a_job_is_uploaded_once(stack: Stack, token: str, photo: Path) -> None:
    before = len(_storage_requests(stack))
    with Client(stack.api_url, api_key=token) as client:
        record = client.submit(
            "a cat",
            image=photo,
            mask_image=png(64, 64, color=(255,), mode="L"),
            controlnets=[{"model": "canny", "image": photo, "preprocess": "canny"}],
            **SMALL,
        )
    assert len(_storage_requests(stack)) - before == 2  # the photo once, the mask once
    assert record.request.image == record.request.controlnets[0].image
    assert record.request.mask_image is not None and record.request.mask_image != record.request.image


def test_the_async_client_uploads_the_same_way(stack: Stack, token: str, photo: Path) -> None:
    async def run() -> tuple[UploadCreated, JobRecord]:
        async with AsyncClient(stack.api_url, api_key=token) as client:
            grant = await client.upload(photo)
            return grant, await client.submit("a cat", ip_adapter={"model": "org/ipa", "image": photo}, **SMALL)

    grant, record = asyncio.run(run())
    assert record.request.ip_adapter is not None and record.request.ip_adapter.image.kind == "upload"
    assert record.request.ip_adapter.image.upload != grant.id  # a new upload of the same file: its own id
    assert all("authorization" not in headers for _, _, headers in _storage_requests(stack))


def test_a_missing_file_is_refused_before_anything_is_sent(stack: Stack, token: str, tmp_path: Path) -> None:
    before = len(_storage_requests(stack))
    with Client(stack.api_url, api_key=token) as client, pytest.raises(ProducerError, match=r"image: .*no file"):
        client.submit("a cat", image=tmp_path / "nope.png", **SMALL)
    with Client(stack.api_url, api_key=token) as client, pytest.raises(ProducerError, match="not a PNG, JPEG"):
        client.upload(b"just text")
    assert len(_storage_requests(stack)) == before


def _sdq(stack: Stack, token: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "SDQ_API_KEY": token}
    command = [sys.executable, "-m", "producer.cli", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_sdq_submit_uploads_local_files_itself(stack: Stack, token: str, photo: Path, tmp_path: Path) -> None:
    (tmp_path / "mask.png").write_bytes(png(64, 64, color=(255,), mode="L"))
    size = ["--width", "64", "--height", "64", "--steps", "2"]
    done = _sdq(
        stack,
        token,
        "submit",
        "a cat",
        *size,
        "--image",
        "photo.png",
        "--strength",
        "0.6",
        "--mask",
        "mask.png",
        "--controlnet",
        "canny:photo.png",
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout)["request"]
    assert (
        set(request["image"]) == {"upload"} and request["strength"] == 0.6 and set(request["mask_image"]) == {"upload"}
    )
    assert request["controlnets"] == [
        {**request["controlnets"][0], "model": "canny", "preprocess": "canny", "image": request["image"]}
    ]

    missing = _sdq(stack, token, "submit", "a cat", "--image", "nope.png", cwd=tmp_path)
    assert missing.returncode == 1 and "nope.png" in missing.stderr and "Traceback" not in missing.stderr
    bad_spec = _sdq(stack, token, "submit", "a cat", "--controlnet", "photo.png", cwd=tmp_path)
    assert bad_spec.returncode == 1 and "MODEL:IMAGE" in bad_spec.stderr


def test_batch_lines_name_image_files_relative_to_the_prompts_file(stack: Stack, token: str, tmp_path: Path) -> None:
    (tmp_path / "in" / "photos").mkdir(parents=True)
    (tmp_path / "in" / "photos" / "a.png").write_bytes(gradient_png(64, 64))
    prompts = tmp_path / "in" / "prompts.jsonl"
    lines = [{"prompt": f"p{i}", "image": "photos/a.png", **SMALL} for i in range(3)] + [{"prompt": "text", **SMALL}]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    before = len(_storage_requests(stack))

    def submit() -> list[str]:
        # A fresh run (as after a kill): it submits what its state does not hold yet, then we read the state.
        with Client(stack.api_url, api_key=token) as client:
            run = BatchRun(client, tmp_path / "out", {}, console=Console(quiet=True), files_dir=prompts.parent)
            run._submit([line for line in read_lines(prompts) if line.key not in run.state.jobs])
            return [run.state.jobs[line.key] for line in read_lines(prompts)]

    job_ids = submit()
    assert len(_storage_requests(stack)) - before == 1  # one file, uploaded once for three lines
    with Client(stack.api_url, api_key=token) as client:
        requests = [client.get(job_id).request for job_id in job_ids]
    uploads = {r.image.upload for r in requests if r.image is not None}
    assert len(uploads) == 1 and requests[3].image is None
    # The state keeps the upload id, so a run killed before it saved its batch re-sends the same request (the server
    # replays it: no new jobs).
    (tmp_path / "out" / ".sdq-batch" / "state.json").write_text(
        json.dumps(
            {**json.loads((tmp_path / "out" / ".sdq-batch" / "state.json").read_text()), "jobs": {}, "batches": []}
        )
    )
    assert submit() == job_ids
    assert len(_storage_requests(stack)) - before == 1


def test_a_batch_rerun_uploads_a_file_again_once_its_upload_expired(
    stack: Stack, token: str, redis_server: str, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(gradient_png(64, 64))
    prompts = tmp_path / "in" / "prompts.jsonl"
    state_file = tmp_path / "out" / ".sdq-batch" / "state.json"

    def submit(*lines: dict[str, object]) -> BatchRun:
        prompts.write_text("".join(json.dumps({**line, "image": "a.png", **SMALL}) + "\n" for line in lines))
        with Client(stack.api_url, api_key=token) as client:
            run = BatchRun(client, tmp_path / "out", {}, console=Console(quiet=True), files_dir=prompts.parent)
            run._submit([line for line in read_lines(prompts) if line.key not in run.state.jobs])
        return run

    first = submit({"prompt": "monday"})
    [(key, saved)] = first.state.uploads.items()
    # A day later (SDQ_UPLOAD_TTL_S): the id serves no new job, and the state says when that was due.
    redis.Redis.from_url(redis_server).delete(keys.upload(saved["id"]))
    state_file.write_text(
        json.dumps(
            {
                **json.loads(state_file.read_text()),
                "uploads": {key: {**saved, "usable_until": "2000-01-01T00:00:00+00:00"}},
            }
        )
    )

    second = submit({"prompt": "monday"}, {"prompt": "tuesday"})

    assert second.state.uploads[key]["id"] != saved["id"]
    with Client(stack.api_url, api_key=token) as client:
        tuesday = client.get(second.state.jobs[read_lines(prompts)[1].key]).request
    assert tuesday.image is not None and tuesday.image.upload == second.state.uploads[key]["id"]


def test_a_line_that_failed_is_submitted_anew_by_the_next_run(stack: Stack, token: str, photo: Path) -> None:
    prompts = photo.parent / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "p", "image": photo.name, **SMALL}) + "\n")
    lines, out = read_lines(prompts), photo.parent / "out"

    with Client(stack.api_url, api_key=token) as client:
        first = BatchRun(client, out, {}, console=Console(quiet=True), poll_interval_s=0.1, files_dir=photo.parent)
        first._submit(lines)
        failed_job = first.state.jobs[lines[0].key]
        client.cancel(failed_job)  # no worker here: a job that ends without images, as a failed one does
        assert first.run(lines) == 1 and first.state.jobs == {}

        again = BatchRun(client, out, {}, console=Console(quiet=True), files_dir=photo.parent)
        again._submit(lines)

        assert again.state.batches[0] == first.state.batches[0] and len(again.state.batches) == 2
        assert again.state.jobs[lines[0].key] != failed_job  # a new job, not the failed one replayed
        assert client.get(again.state.jobs[lines[0].key]).status is JobStatus.QUEUED
        client.cancel(again.state.jobs[lines[0].key])
