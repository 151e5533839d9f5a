"""One job per storage backend through the real stack: `sdq api` + `sdq worker` with `SDQ_STORAGE_URL` naming
SeaweedFS (S3), Azurite (Azure Blob), fake-gcs-server (GCS) or a local folder; the URL that `GET /v1/jobs/{id}`
returns downloads the image with a plain HTTP client, and the same URL with its signature changed gets 403.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image

from storage import StorageCredentials, open_store
from tests.emulators import AzureServer, GcsServer, S3Server, tamper_signature
from tests.storage.gcs_v4 import SignedUrlRejected, verify_v4_signed_url
from tests.support import start_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BUCKET = "sdq-e2e"


@dataclass(frozen=True)
class Target:
    """Where one backend's stack puts images, and how its processes get the secrets (as settings)."""

    storage_url: str
    env: dict[str, str] = field(repr=False)
    credentials: StorageCredentials = field(repr=False)
    #: The server checks signatures itself, so a tampered URL must get 403 from it.
    server_checks_signatures: bool = True
    gcs_public_key: rsa.RSAPublicKey | None = field(default=None, repr=False)


def _file_target(tmp_path: Path) -> Target:
    return Target((tmp_path / "objects").as_uri(), {}, StorageCredentials())


def _s3_target(server: S3Server) -> Target:
    server.create_bucket(BUCKET)
    env = {
        "SDQ_STORAGE_AWS_ACCESS_KEY_ID": server.access_key_id,
        "SDQ_STORAGE_AWS_SECRET_ACCESS_KEY": server.secret_access_key,
    }
    credentials = StorageCredentials(
        aws_access_key_id=server.access_key_id, aws_secret_access_key=server.secret_access_key
    )
    return Target(server.url(BUCKET, f"e2e/{uuid.uuid4().hex}"), env, credentials)


def _azure_target(server: AzureServer) -> Target:
    server.create_container(BUCKET)
    # The name Azure's own tools use: the settings class accepts it besides SDQ_STORAGE_AZURE_CONNECTION_STRING.
    env = {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string}
    credentials = StorageCredentials(azure_connection_string=server.connection_string)
    return Target(server.url(BUCKET, f"e2e/{uuid.uuid4().hex}"), env, credentials)


def _gcs_target(server: GcsServer) -> Target:
    server.create_bucket(BUCKET)
    key_json = json.dumps(server.service_account_info)
    private_key = serialization.load_pem_private_key(server.private_key_pem, password=None)
    return Target(
        server.url(BUCKET, f"e2e/{uuid.uuid4().hex}") + "&anonymous=true",
        {"SDQ_STORAGE_GCS_SERVICE_ACCOUNT_JSON": key_json},
        StorageCredentials(gcs_service_account_json=key_json),
        server_checks_signatures=False,
        gcs_public_key=cast(rsa.RSAPrivateKey, private_key).public_key(),
    )


@pytest.fixture(
    params=[
        pytest.param("file", id="file"),
        pytest.param("s3", id="s3-seaweedfs", marks=pytest.mark.s3),
        pytest.param("azure", id="azure-azurite", marks=pytest.mark.azure),
        pytest.param("gcs", id="gcs-fake-gcs", marks=pytest.mark.gcs),
    ]
)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "file":
        return _file_target(tmp_path)
    if request.param == "s3":
        return _s3_target(request.getfixturevalue("seaweedfs_server"))
    if request.param == "azure":
        return _azure_target(request.getfixturevalue("azurite_server"))
    return _gcs_target(request.getfixturevalue("fake_gcs_server"))


def test_a_job_lands_in_the_backend_and_its_url_downloads(
    target: Target, redis_server: str, model_cache: Path, tmp_path: Path
) -> None:
    redis.Redis.from_url(redis_server).flushdb()
    stack = start_stack(tmp_path, redis_server, model_cache, SDQ_STORAGE_URL=target.storage_url, **target.env)
    try:
        stack.start_worker()
        with stack.client() as client:
            job = client.wait(client.submit("a lighthouse", width=72, height=64, steps=2, seed=3).id, timeout_s=180)
            assert job.status.value == "succeeded", job.error
        record = httpx.get(f"{stack.api_url}/v1/jobs/{job.id}").json()  # plain HTTP, no SDK
        [output] = record["outputs"]
        url = output["url"]
        # Fetched while the stack runs: a local store's links are served by the API itself.
        response = httpx.get(url)
        tampered = httpx.get(tamper_signature(url))
    finally:
        stack.stop()

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == ("PNG", (72, 64))
    # The object really is in that backend, under the job's deterministic key.
    stored = open_store(target.storage_url, credentials=target.credentials).head(output["key"])
    assert stored.size == len(response.content) and stored.content_type == "image/png"

    if target.server_checks_signatures:
        assert tampered.status_code == 403
    else:  # fake-gcs-server checks no signatures: verify offline, as Cloud Storage would
        assert target.gcs_public_key is not None
        now = datetime.now(timezone.utc)
        verify_v4_signed_url(url, target.gcs_public_key, now=now)
        with pytest.raises(SignedUrlRejected):
            verify_v4_signed_url(tamper_signature(url), target.gcs_public_key, now=now)


@pytest.mark.s3
def test_the_demo_runs_against_s3(seaweedfs_server: S3Server, tmp_path: Path, model_cache: Path) -> None:
    seaweedfs_server.create_bucket(BUCKET)
    url = seaweedfs_server.url(BUCKET, f"demo/{uuid.uuid4().hex}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDQ_", "AWS_"))}
    env.update(
        SDQ_DATA_DIR=str(tmp_path / "data"),
        SDQ_MODEL_CACHE_DIR=str(model_cache),
        SDQ_STORAGE_AWS_ACCESS_KEY_ID=seaweedfs_server.access_key_id,
        SDQ_STORAGE_AWS_SECRET_ACCESS_KEY=seaweedfs_server.secret_access_key,
        HF_HUB_OFFLINE="1",
    )
    command = [sys.executable, "-m", "producer.cli", "demo", "--out", str(tmp_path / "out"), "--jobs", "1"]
    result = subprocess.run([*command, "--storage-url", url], env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "images go to s3://" in result.stdout
    credentials = StorageCredentials(
        aws_access_key_id=seaweedfs_server.access_key_id, aws_secret_access_key=seaweedfs_server.secret_access_key
    )
    assert [info.key for info in open_store(url, credentials=credentials).list("jobs/")]  # the image is in the bucket
