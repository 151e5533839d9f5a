"""Presigned uploads on every backend: a client sends bytes straight to storage with a plain HTTP client.

Where the server checks grants (local route, SeaweedFS, Azurite) a tampered or expired one gets 403 from it; moto
checks nothing, and fake-gcs-server checks no signature, so GCS grants are checked with the independent V4
verifier (tests/storage/gcs_v4.py), as the download tests do. Size limits: the local route, SeaweedFS (S3 POST
policy) and GCS (`x-goog-content-length-range`, checked by Cloud Storage; the verifier checks that the header is
signed) enforce them; an Azure SAS cannot, which the grant says (`enforces_size=False`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from storage import FullStore, PresignedUpload, UploadSigner
from tests.emulators import GcsServer
from tests.storage.gcs_v4 import SignedUrlRejected, verify_v4_signed_url

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
#: The backends whose server checks upload grants itself.
CHECKING = [
    pytest.param("local_store", id="file"),
    pytest.param("seaweedfs_store", id="seaweedfs", marks=pytest.mark.s3),
    pytest.param("azurite_store", id="azurite", marks=pytest.mark.azure),
]
#: Those that also refuse a body over the limit, and another content type than the signed one.
SIZE_CHECKING = CHECKING[:2]


def send(grant: PresignedUpload, data: bytes, *, headers: dict[str, str] | None = None) -> httpx.Response:
    """What a client does with a grant: a plain HTTP client, no credentials of its own."""
    with httpx.Client(timeout=30) as client:
        if grant.method == "POST":
            return client.post(grant.url, data=dict(grant.fields), files={"file": ("upload", data, grant.content_type)})
        return client.put(grant.url, content=data, headers=headers if headers is not None else dict(grant.headers))


def _grant(store: FullStore, key: str, **kw: object) -> PresignedUpload:
    assert isinstance(store, UploadSigner)
    options: dict = {"content_type": "image/png", "max_bytes": 1000, **kw}
    return store.presign_upload(key, **options)


def _tampered(grant: PresignedUpload) -> PresignedUpload:
    def flip(value: str) -> str:
        return value[:-1] + ("0" if value[-1] != "0" else "1")

    if grant.method == "POST":
        fields = dict(grant.fields)
        name = next(n for n in fields if n.lower() == "x-amz-signature")
        fields[name] = flip(fields[name])
        return PresignedUpload(**{**grant.__dict__, "fields": fields})
    parts = urlsplit(grant.url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = {"signature", "sig", "x-goog-signature", "x-amz-signature"}
    query = [(n, flip(v) if n.lower() in names else v) for n, v in query]
    return PresignedUpload(**{**grant.__dict__, "url": urlunsplit(parts._replace(query=urlencode(query)))})


def test_a_presigned_upload_stores_the_bytes_with_their_type(store: FullStore) -> None:
    grant = _grant(store, "uploads/a1")
    assert grant.max_bytes == 1000 and grant.expires_at > datetime.now(timezone.utc)
    assert "Authorization" not in grant.headers

    response = send(grant, PNG)

    assert response.status_code in (200, 201, 204), response.text
    assert store.get("uploads/a1") == PNG
    assert store.head("uploads/a1").content_type == "image/png"


@pytest.mark.parametrize("backend_store", CHECKING)
def test_a_tampered_grant_gets_403_and_writes_nothing(backend_store: str, request: pytest.FixtureRequest) -> None:
    store: FullStore = request.getfixturevalue(backend_store)
    grant = _grant(store, "uploads/t1")

    response = send(_tampered(grant), PNG)

    assert response.status_code == 403, response.text
    assert not list(store.list("uploads/"))


@pytest.mark.parametrize("backend_store", CHECKING)
def test_an_expired_grant_gets_403(backend_store: str, request: pytest.FixtureRequest) -> None:
    store: FullStore = request.getfixturevalue(backend_store)
    grant = _grant(store, "uploads/e1", expires_in=timedelta(seconds=1))
    time.sleep(2.2)

    assert send(grant, PNG).status_code == 403
    assert not list(store.list("uploads/"))


@pytest.mark.parametrize("backend_store", SIZE_CHECKING)
def test_a_body_over_the_limit_is_refused_by_storage(backend_store: str, request: pytest.FixtureRequest) -> None:
    store: FullStore = request.getfixturevalue(backend_store)
    grant = _grant(store, "uploads/b1", max_bytes=100)

    response = send(grant, PNG)  # 208 bytes

    assert response.status_code in (400, 413), response.text
    assert not list(store.list("uploads/"))


@pytest.mark.parametrize("backend_store", CHECKING)
def test_a_grant_writes_its_key_alone(backend_store: str, request: pytest.FixtureRequest) -> None:
    store: FullStore = request.getfixturevalue(backend_store)
    grant = _grant(store, "uploads/k1")
    if grant.method == "POST":
        other = PresignedUpload(**{**grant.__dict__, "fields": {**grant.fields, "key": "uploads/k2"}})
    else:
        other = PresignedUpload(**{**grant.__dict__, "url": grant.url.replace("uploads/k1", "uploads/k2")})

    assert send(other, PNG).status_code == 403
    assert not list(store.list("uploads/"))


@pytest.mark.parametrize("backend_store", SIZE_CHECKING)
def test_another_content_type_than_the_signed_one_is_refused(
    backend_store: str, request: pytest.FixtureRequest
) -> None:
    store: FullStore = request.getfixturevalue(backend_store)
    grant = _grant(store, "uploads/c1")
    if grant.method == "POST":
        sneaky = PresignedUpload(**{**grant.__dict__, "fields": {**grant.fields, "Content-Type": "text/html"}})
        assert send(sneaky, PNG).status_code == 403
    else:
        assert send(grant, PNG, headers={**grant.headers, "Content-Type": "text/html"}).status_code == 403


@pytest.mark.azure
def test_azure_cannot_bound_the_size_and_says_so(azurite_store: FullStore) -> None:
    grant = _grant(azurite_store, "uploads/z1", max_bytes=10)
    assert grant.enforces_size is False and grant.headers["x-ms-blob-type"] == "BlockBlob"
    assert send(grant, PNG).status_code == 201  # accepted: whoever reads it checks the size first


@pytest.mark.gcs
def test_gcs_grants_sign_the_type_and_size_range_and_expire(
    fake_gcs_store: FullStore, fake_gcs_server: GcsServer
) -> None:
    key = load_pem_private_key(fake_gcs_server.private_key_pem, password=None).public_key()
    grant = _grant(fake_gcs_store, "uploads/g1", max_bytes=1000, expires_in=timedelta(seconds=60))
    now = datetime.now(timezone.utc)
    assert grant.headers["x-goog-content-length-range"] == "0,1000"

    verify_v4_signed_url(grant.url, key, now=now, method="PUT", headers=grant.headers)  # type: ignore[arg-type]
    for bad in (
        dict(url=_tampered(grant).url, headers=grant.headers, now=now),
        dict(url=grant.url, headers={**grant.headers, "x-goog-content-length-range": "0,99999999"}, now=now),
        dict(url=grant.url, headers={**grant.headers, "Content-Type": "text/html"}, now=now),
        dict(url=grant.url, headers=grant.headers, now=now + timedelta(seconds=61)),
    ):
        with pytest.raises(SignedUrlRejected):
            verify_v4_signed_url(bad["url"], key, now=bad["now"], method="PUT", headers=bad["headers"])  # type: ignore[arg-type]
