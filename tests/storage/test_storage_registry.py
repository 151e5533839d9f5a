"""`open_store`: storage URLs to backends."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

from storage import (
    AzureBlobStore,
    GcsStore,
    LinkSigner,
    LocalStore,
    NotSupportedError,
    PresigningStore,
    S3Store,
    StorageConfigError,
    StorageCredentials,
    open_store,
)

SIGNER = LinkSigner(b"k" * 32, "https://api.example.com")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """S3 stores opened here find credentials the way production does, via boto3's chain, from this environment."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_file_url_opens_a_local_store_at_that_path(tmp_path: Path) -> None:
    store = open_store((tmp_path / "out dir").as_uri())

    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "out dir"
    assert store.url == (tmp_path / "out dir").as_uri()
    assert isinstance(store, PresigningStore)


def test_file_url_with_localhost_host_is_absolute() -> None:
    store = open_store("file://localhost/srv/sdqueue")
    assert isinstance(store, LocalStore)
    assert store.root == Path("/srv/sdqueue")


def test_signer_lets_a_local_store_presign() -> None:
    url = open_store("file:///srv/sdqueue", signer=SIGNER).presign_get("a.png", expires_in=timedelta(minutes=1))
    assert url.startswith("https://api.example.com/v1/files/a.png?expires=")


def test_local_store_without_signer_cannot_presign() -> None:
    with pytest.raises(NotSupportedError, match="signer"):
        open_store("file:///srv/sdqueue").presign_get("a.png")


@pytest.mark.parametrize("url", ["file://relative/path", "file:relative/path", "file:///srv/x?mode=1", "file:///a#b"])
def test_relative_or_decorated_file_urls_are_refused(url: str) -> None:
    with pytest.raises(StorageConfigError, match="file"):
        open_store(url)


def test_s3_url_carries_bucket_prefix_and_client_options() -> None:
    store = open_store("s3://my-bucket/runs/2024/?endpoint_url=http://127.0.0.1:9000&region=eu-west-1")

    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == ("my-bucket", "runs/2024")
    client = store._client
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.config.signature_version == "s3v4"
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}


def test_s3_url_without_prefix_and_with_addressing_style() -> None:
    store = open_store("s3://my-bucket?addressing_style=path&region=us-east-1")

    assert isinstance(store, S3Store)
    assert store.prefix == ""
    assert store._client.meta.config.s3 == {"addressing_style": "path"}
    assert store.url == "s3://my-bucket?region=us-east-1&addressing_style=path"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://b-1/p?endpointurl=http://x", "unknown option"),
        ("s3://b-1/p?region=a&region=b", "more than once"),
        ("s3://b-1/p?addressing_style=dns", "addressing_style"),
        ("s3://Bad_Bucket/p", "bucket"),
        ("s3:///p", "bucket"),
        ("s3://b-1/a/../b", "'..'"),
        ("s3://b-1/p?endpoint_url=not%20a%20url", "endpoint"),
    ],
)
def test_malformed_s3_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(StorageConfigError, match=message):
        open_store(url)


@pytest.mark.parametrize("url", ["wasb://bucket/p", "/srv/sdqueue", "", "http://example.com/x"])
def test_unknown_scheme_lists_the_supported_ones(url: str) -> None:
    with pytest.raises(StorageConfigError, match="supported schemes: az://, file://, gs://, s3://"):
        open_store(url)


def test_a_local_store_reopens_from_its_url(local_store: LocalStore) -> None:
    local_store.put("k", b"v", content_type="text/plain")
    assert open_store(local_store.url).get("k") == b"v"


@pytest.mark.s3
def test_an_s3_store_reopens_from_its_url(s3_store: S3Store) -> None:
    s3_store.put("k", b"v", content_type="text/plain")
    assert open_store(s3_store.url).get("k") == b"v"


def test_az_url_carries_account_container_prefix_and_endpoint() -> None:
    url = "az://myaccount/outputs/runs/2024?endpoint_url=http://127.0.0.1:10000/myaccount"
    store = open_store(url, credentials=StorageCredentials(azure_account_key="a2V5"))

    assert isinstance(store, AzureBlobStore)
    assert (store.account, store.container, store.prefix) == ("myaccount", "outputs", "runs/2024")
    assert store.url == "az://myaccount/outputs/runs/2024?endpoint_url=http%3A%2F%2F127.0.0.1%3A10000%2Fmyaccount"


def test_gs_url_carries_bucket_prefix_and_options(tmp_path: Path) -> None:
    store = open_store("gs://my-bucket/out/?endpoint_url=http://127.0.0.1:4443&anonymous=true&project=p1")

    assert isinstance(store, GcsStore)
    assert (store.bucket_name, store.prefix) == ("my-bucket", "out")
    assert store.url == "gs://my-bucket/out?endpoint_url=http%3A%2F%2F127.0.0.1%3A4443&anonymous=true"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("az://Bad_Account/c", "account names"),
        ("az://account1", "az://account/container"),
        ("az://account1/UPPER", "container names"),
        ("az://account1/c--c", "container names"),
        ("az://account1/cont?region=x", "unknown option"),
        ("gs://B/p?anonymous=true", "bucket names"),
        ("gs://my-bucket/p?anonymous=maybe", "anonymous"),
        ("gs://my-bucket/a/../b?anonymous=true", "'..'"),
    ],
)
def test_malformed_azure_and_gcs_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(StorageConfigError, match=message):
        open_store(url, credentials=StorageCredentials(azure_account_key="a2V5"))


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [("az://account1/cont", "azure.storage.blob", "azure"), ("gs://my-bucket/p", "google.cloud.storage", "gcp")],
)
def test_a_missing_sdk_gives_an_install_hint(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str
) -> None:
    # Simulates an install without the extra: a None entry in sys.modules makes `import` raise ImportError.
    for name in (module, "google.cloud.storage.retry"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(StorageConfigError, match=rf"pip install 'sdqueue\[{extra}\]'"):
        open_store(url, credentials=StorageCredentials(azure_account_key="a2V5"))
