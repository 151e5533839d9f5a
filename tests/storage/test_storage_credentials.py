"""Explicit storage secrets: checked when built, never shown, and read from `SDQ_*` settings by the deployables."""

from __future__ import annotations

import json

import pytest

from producer.settings import CommonSettings
from storage import StorageConfigError, StorageCredentials


def test_secrets_never_show_in_repr() -> None:
    credentials = StorageCredentials(
        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="s3cr3t", azure_account_key="azk3y"
    )
    assert "s3cr3t" not in repr(credentials) and "AKIAEXAMPLE" not in repr(credentials)
    assert "azk3y" not in repr(credentials)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"aws_access_key_id": "a"}, "both"),
        ({"aws_secret_access_key": "b"}, "both"),
        ({"aws_session_token": "t"}, "session token"),
        ({"azure_connection_string": "c", "azure_account_key": "k"}, "not both"),
    ],
)
def test_incomplete_or_conflicting_secrets_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(StorageConfigError, match=message):
        StorageCredentials(**fields)


def test_settings_read_the_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = {"type": "service_account", "client_email": "a@b.iam.gserviceaccount.com", "private_key": "pem"}
    monkeypatch.setenv("SDQ_STORAGE_AWS_ACCESS_KEY_ID", "AKIA1")
    monkeypatch.setenv("SDQ_STORAGE_AWS_SECRET_ACCESS_KEY", "secret1")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=a;AccountKey=b")  # Azure's usual name
    monkeypatch.setenv("SDQ_STORAGE_GCS_SERVICE_ACCOUNT_JSON", json.dumps(key))

    settings = CommonSettings()
    credentials = settings.storage_credentials()

    assert (credentials.aws_access_key_id, credentials.aws_secret_access_key) == ("AKIA1", "secret1")
    assert credentials.azure_connection_string == "AccountName=a;AccountKey=b"
    assert credentials.gcs_service_account_info() == key
    assert "secret1" not in repr(settings)


def test_no_settings_means_each_sdks_own_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert CommonSettings().storage_credentials() == StorageCredentials()
