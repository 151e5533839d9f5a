"""What only the GCS backend does: V4 signed URLs, checked offline (fake-gcs-server checks none), and errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from storage import GcsStore, StorageConfigError, StorageCredentials, open_store
from tests.emulators import GcsServer
from tests.storage.gcs_v4 import SignedUrlRejected, verify_v4_signed_url

pytestmark = pytest.mark.gcs


def _public_key(server: GcsServer) -> RSAPublicKey:
    key = serialization.load_pem_private_key(server.private_key_pem, password=None)
    return cast(rsa.RSAPrivateKey, key).public_key()


def test_signed_url_verifies_with_the_service_accounts_key(
    fake_gcs_store: GcsStore, fake_gcs_server: GcsServer
) -> None:
    fake_gcs_store.put("a b/ü+x.png", b"png", content_type="image/png")
    url = fake_gcs_store.presign_get("a b/ü+x.png", expires_in=timedelta(minutes=10))

    verify_v4_signed_url(url, _public_key(fake_gcs_server), now=datetime.now(timezone.utc))
    query = parse_qs(urlsplit(url).query)
    assert query["X-Goog-Expires"] == ["600"]
    assert query["X-Goog-Credential"][0].startswith(fake_gcs_server.service_account_info["client_email"])
    assert httpx.get(url).content == b"png"


def test_tampered_expired_or_foreign_urls_are_rejected(fake_gcs_store: GcsStore, fake_gcs_server: GcsServer) -> None:
    url = fake_gcs_store.presign_get("k.png", expires_in=timedelta(seconds=60))
    index = url.index("X-Goog-Signature=") + len("X-Goog-Signature=")
    tampered = url[:index] + ("0" if url[index] != "0" else "1") + url[index + 1 :]
    other_path = url.replace("/k.png?", "/l.png?")
    now = datetime.now(timezone.utc)
    key = _public_key(fake_gcs_server)

    with pytest.raises(SignedUrlRejected, match="signature"):
        verify_v4_signed_url(tampered, key, now=now)
    with pytest.raises(SignedUrlRejected, match="signature"):
        verify_v4_signed_url(other_path, key, now=now)
    with pytest.raises(SignedUrlRejected, match="expired"):
        verify_v4_signed_url(url, key, now=now + timedelta(seconds=61))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(SignedUrlRejected, match="signature"):
        verify_v4_signed_url(url, stranger, now=now)


def test_a_malformed_service_account_key_is_a_config_error(fake_gcs_server: GcsServer) -> None:
    url = fake_gcs_server.url("sdqueue-test", "p") + "&anonymous=true"
    with pytest.raises(StorageConfigError, match="not valid JSON"):
        open_store(url, credentials=StorageCredentials(gcs_service_account_json="{"))
    with pytest.raises(StorageConfigError, match="client_email"):
        open_store(url, credentials=StorageCredentials(gcs_service_account_json=json.dumps({"type": "x"})))


def test_a_missing_bucket_is_a_config_error(fake_gcs_server: GcsServer) -> None:
    credentials = StorageCredentials(gcs_service_account_json=json.dumps(fake_gcs_server.service_account_info))
    store = open_store(fake_gcs_server.url("no-such-bucket", "p") + "&anonymous=true", credentials=credentials)
    with pytest.raises(StorageConfigError, match="does not exist"):
        store.put("a.txt", b"a", content_type="text/plain")
