"""What only the Azure backend does: connection strings, account-key SAS, errors from Azurite translated."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from storage import (
    AzureBlobStore,
    NotSupportedError,
    StorageConfigError,
    StorageCredentials,
    StoragePermissionError,
    open_store,
)
from tests.emulators import AzureServer

pytestmark = pytest.mark.azure

CONTAINER = "sdqueue-test"


def test_a_connection_string_opens_the_store(azurite_server: AzureServer) -> None:
    azurite_server.create_container(CONTAINER)
    credentials = StorageCredentials(azure_connection_string=azurite_server.connection_string)
    store = open_store(azurite_server.url(CONTAINER, "cs"), credentials=credentials)

    store.put("a.txt", b"hello", content_type="text/plain")
    assert store.get("a.txt") == b"hello"
    assert isinstance(store, AzureBlobStore) and (store.container, store.prefix) == (CONTAINER, "cs")


def test_sas_url_is_read_only_for_one_blob_and_expires(azurite_store: AzureBlobStore) -> None:
    azurite_store.put("x/a.png", b"png", content_type="image/png")
    url = azurite_store.presign_get("x/a.png", expires_in=timedelta(minutes=10))

    query = parse_qs(urlsplit(url).query)
    assert query["sp"] == ["r"] and query["sr"] == ["b"] and "sig" in query and "se" in query
    assert httpx.get(url).content == b"png"
    assert httpx.put(url, content=b"overwrite", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 403
    other = url.replace("/x/a.png?", "/x/b.png?")
    azurite_store.put("x/b.png", b"other", content_type="image/png")
    assert httpx.get(other).status_code == 403  # the signature covers the blob's name


def test_a_wrong_key_is_a_permission_error(azurite_server: AzureServer) -> None:
    azurite_server.create_container(CONTAINER)
    wrong = StorageCredentials(azure_account_key="d3Jvbmc=")
    store = open_store(azurite_server.url(CONTAINER, "p"), credentials=wrong)
    with pytest.raises(StoragePermissionError):
        store.put("a.txt", b"a", content_type="text/plain")
    with pytest.raises(StoragePermissionError):
        store.head("a.txt")


def test_a_missing_container_is_a_config_error(azurite_server: AzureServer) -> None:
    credentials = StorageCredentials(azure_account_key=azurite_server.account_key)
    store = open_store(azurite_server.url("no-such-container", "p"), credentials=credentials)
    with pytest.raises(StorageConfigError, match="does not exist"):
        store.put("a.txt", b"a", content_type="text/plain")
    with pytest.raises(StorageConfigError, match="does not exist"):
        store.delete("a.txt")


def test_a_connection_string_for_another_account_is_refused(azurite_server: AzureServer) -> None:
    credentials = StorageCredentials(azure_connection_string=azurite_server.connection_string)
    with pytest.raises(StorageConfigError, match="connection string is for account"):
        open_store(f"az://otheraccount/{CONTAINER}", credentials=credentials)


def test_a_sas_token_credential_cannot_presign(azurite_server: AzureServer, azurite_store: AzureBlobStore) -> None:
    azurite_server.create_container(CONTAINER)
    sas = urlsplit(azurite_store.presign_get("a.png")).query
    connection = f"BlobEndpoint={azurite_server.blob_endpoint};SharedAccessSignature={sas}"
    store = AzureBlobStore(azurite_server.account, CONTAINER, connection_string=connection)
    with pytest.raises(NotSupportedError, match="SAS token"):
        store.presign_get("a.png")
