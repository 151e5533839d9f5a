"""Azurite's blob service: the Azure Storage emulator."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import pytest

from tests.emulators.process import find_binary, free_ports, run_process


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

    with run_process(argv, "azurite", ready, env=env):
        yield server


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzureServer]:
    """Azurite's blob service for the whole session."""
    with azurite() as server:
        yield server
