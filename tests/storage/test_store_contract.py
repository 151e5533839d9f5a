"""The storage contract: every backend behaves the same through `ObjectStore` and `Presigner`."""

from __future__ import annotations

import io
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from storage import (
    MAX_EXPIRY,
    AzureBlobStore,
    BoundedReader,
    FullStore,
    GcsStore,
    InvalidExpiryError,
    InvalidKeyError,
    InvalidMetadataError,
    LocalStore,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    ObjectTooLargeError,
    Presigner,
    PresigningStore,
    S3Store,
    get_at_most,
)
from storage.base import MULTIPART_THRESHOLD_BYTES
from tests.emulators import tamper_signature
from tests.storage.conftest import SECRET

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
DISPOSITION = 'attachment; filename="cat.png"'
BAD_KEYS = ["", "/abs", "a/../b", "..", "./a", "a//b", "a/", "a\\b", "a\x00b", "a\nb", "a\x7fb", "é" * 513]


def test_backends_satisfy_both_protocols(store: PresigningStore) -> None:
    assert isinstance(store, ObjectStore)
    assert isinstance(store, Presigner)


def test_put_get_head_round_trip_keeps_type_disposition_and_metadata(store: PresigningStore) -> None:
    put = store.put(
        "jobs/j1/0.png", PNG, content_type="image/png", content_disposition=DISPOSITION, metadata={"job_id": "j1"}
    )
    head = store.head("jobs/j1/0.png")

    assert store.get("jobs/j1/0.png") == PNG
    for info in (put, head):
        assert (info.key, info.size, info.content_type) == ("jobs/j1/0.png", len(PNG), "image/png")
        assert info.content_disposition == DISPOSITION
        assert dict(info.metadata) == {"job_id": "j1"}
    assert head.etag == put.etag is not None
    assert isinstance(head.last_modified, datetime)
    assert head.last_modified.tzinfo is not None


def test_missing_key_is_object_not_found_and_file_not_found(store: PresigningStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.get("nope.png")
    with pytest.raises(FileNotFoundError):
        store.head("nope.png")


def test_delete_removes_and_is_idempotent(store: PresigningStore) -> None:
    store.put("gone.txt", b"x", content_type="text/plain")
    store.delete("gone.txt")
    store.delete("gone.txt")
    store.delete("never-existed.txt")
    with pytest.raises(ObjectNotFoundError):
        store.head("gone.txt")


def test_put_overwrites_bytes_type_and_metadata(store: PresigningStore) -> None:
    store.put("x", b"old", content_type="text/plain", content_disposition="inline", metadata={"a": "1", "b": "2"})
    store.put("x", b"new!", content_type="application/json", metadata={"a": "3"})

    info = store.head("x")
    assert store.get("x") == b"new!"
    assert (info.size, info.content_type, dict(info.metadata)) == (4, "application/json", {"a": "3"})
    assert info.content_disposition is None


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_are_refused_by_every_operation(store: PresigningStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put(key, b"x", content_type="text/plain")
    with pytest.raises(InvalidKeyError):
        store.get(key)
    with pytest.raises(InvalidKeyError):
        store.head(key)
    with pytest.raises(InvalidKeyError):
        store.delete(key)
    with pytest.raises(InvalidKeyError):
        store.presign_get(key)


@pytest.mark.parametrize("metadata", [{"Job-Id": "x"}, {"job_id": "naïve"}, {"big": "x" * 2048}])
def test_metadata_not_every_backend_keeps_is_refused(store: PresigningStore, metadata: dict[str, str]) -> None:
    with pytest.raises(InvalidMetadataError):
        store.put("m", b"x", content_type="text/plain", metadata=metadata)


@pytest.mark.parametrize("key", ["jobs/j1/0.png", "dir with space/a+b ü%.png"])
def test_presigned_url_serves_bytes_type_and_disposition(store: PresigningStore, key: str) -> None:
    store.put(key, PNG, content_type="image/png", content_disposition=DISPOSITION)

    response = httpx.get(store.presign_get(key, expires_in=timedelta(minutes=5)))

    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == DISPOSITION


def test_presign_accepts_the_longest_expiry(store: PresigningStore) -> None:
    assert store.presign_get("k", expires_in=MAX_EXPIRY)


def test_presign_refuses_more_than_seven_days(store: PresigningStore) -> None:
    with pytest.raises(InvalidExpiryError, match=r"at most 7 days \(604800 s\); got 8 days"):
        store.presign_get("k", expires_in=timedelta(days=8))


@pytest.mark.parametrize("expires_in", [timedelta(0), timedelta(seconds=-1), timedelta(milliseconds=500)], ids=str)
def test_presign_refuses_non_positive_expiry(store: PresigningStore, expires_in: timedelta) -> None:
    with pytest.raises(InvalidExpiryError, match="at least 1 second"):
        store.presign_get("k", expires_in=expires_in)


def test_list_yields_keys_under_a_string_prefix_in_order(store: FullStore) -> None:
    for key in ("m/b.bin", "m/a/2.bin", "m/a/1.bin", "ma.txt", "other/x"):
        store.put(key, key.encode(), content_type="application/octet-stream")

    listed = list(store.list("m/"))

    assert [info.key for info in listed] == ["m/a/1.bin", "m/a/2.bin", "m/b.bin"]
    assert [info.size for info in listed] == [len("m/a/1.bin"), len("m/a/2.bin"), len("m/b.bin")]
    assert all(info.last_modified is not None and info.last_modified.tzinfo for info in listed)
    assert [info.key for info in store.list("m")] == ["m/a/1.bin", "m/a/2.bin", "m/b.bin", "ma.txt"]
    assert [info.key for info in store.list()] == ["m/a/1.bin", "m/a/2.bin", "m/b.bin", "ma.txt", "other/x"]
    assert list(store.list("nothing/")) == []


def test_put_takes_a_path_or_a_binary_file(store: FullStore, tmp_path: Path) -> None:
    source = tmp_path / "model.safetensors"
    source.write_bytes(PNG * 3)
    stream = io.BytesIO(b"skip" + PNG)
    stream.seek(4)

    from_path = store.put("f/path.bin", source, content_type="application/octet-stream", metadata={"n": "1"})
    from_file = store.put("f/file.png", stream, content_type="image/png", content_disposition=DISPOSITION)

    assert store.get("f/path.bin") == PNG * 3 and store.get("f/file.png") == PNG
    assert (from_path.size, from_path.content_type, dict(from_path.metadata)) == (
        len(PNG) * 3,
        "application/octet-stream",
        {"n": "1"},
    )
    assert (from_file.size, from_file.content_disposition) == (len(PNG), DISPOSITION)


def test_large_objects_go_up_in_parts_and_round_trip(store: FullStore, tmp_path: Path) -> None:
    big = os.urandom(MULTIPART_THRESHOLD_BYTES + 1024 * 1024 + 7)

    info = store.put("big/blob.bin", big, content_type="application/octet-stream", metadata={"kind": "big"})
    with open(tmp_path / "out", "wb") as file:
        written = store.get_into("big/blob.bin", file)

    assert info.size == written == len(big)
    assert (tmp_path / "out").read_bytes() == big
    head = store.head("big/blob.bin")
    assert (head.size, head.content_type, dict(head.metadata)) == (
        len(big),
        "application/octet-stream",
        {"kind": "big"},
    )


def test_get_into_a_missing_key_is_object_not_found(store: FullStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.get_into("nope.bin", io.BytesIO())


def test_presigned_url_never_carries_a_key_or_secret(store: FullStore) -> None:
    url = store.presign_get("a.png")
    secrets = _secrets_of(store)
    assert secrets, "each backend here is opened with a secret"
    assert not any(secret in url or quote(secret, safe="") in url for secret in secrets)


def test_tampered_and_expired_urls_get_403(checking_store: FullStore) -> None:
    checking_store.put("t/x.png", PNG, content_type="image/png")
    url = checking_store.presign_get("t/x.png", expires_in=timedelta(minutes=5))
    assert httpx.get(url).status_code == 200

    assert httpx.get(tamper_signature(url)).status_code == 403

    short = checking_store.presign_get("t/x.png", expires_in=timedelta(seconds=1))
    time.sleep(2.1)  # the one place a sleep is the point: the URL must outlive its expiry
    assert httpx.get(short).status_code == 403


def _secrets_of(store: FullStore) -> list[str]:
    # Reads the stores' private parts: the point is that what they hold never leaks into a URL.
    if isinstance(store, LocalStore):
        return [SECRET.decode()]
    found: list[str] = []
    if isinstance(store, S3Store):
        credentials = store._client._request_signer._credentials  # type: ignore[attr-defined]
        found.append(credentials.secret_key)
    if isinstance(store, AzureBlobStore):
        found.append(store._service.credential.account_key)
    if isinstance(store, GcsStore):
        key = store._signer.signer._impl._key  # type: ignore[union-attr]
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        found.extend(line.decode() for line in pem.splitlines()[1:-1])
    return [secret for secret in found if secret]


def test_get_at_most_reads_what_fits_and_refuses_what_does_not(store: FullStore) -> None:
    """The bounded read of objects nobody bounded when they were written (an upload through an Azure SAS, which
    cannot cap its size): every backend answers the same, one request where the backend can (`BoundedReader`)."""
    store.put("uploads/u1", PNG, content_type="image/png")
    store.put("uploads/empty", b"", content_type="image/png")
    assert get_at_most(store, "uploads/u1", len(PNG)) == PNG
    assert get_at_most(store, "uploads/empty", 0) == b""
    with pytest.raises(ObjectTooLargeError) as refused:
        get_at_most(store, "uploads/u1", len(PNG) - 1)
    assert (refused.value.size, refused.value.limit) == (len(PNG), len(PNG) - 1)
    with pytest.raises(ObjectNotFoundError):
        get_at_most(store, "uploads/none", 1 << 20)


def test_get_at_most_on_a_store_that_cannot_bound_a_read_asks_the_size_first(local_store: FullStore) -> None:
    """A store of the user's own making (only `ObjectStore`'s methods) gets a HEAD, then the GET if it fits."""
    calls: list[str] = []

    class Plain:
        url = local_store.url

        def head(self, key: str) -> ObjectInfo:
            calls.append("head")
            return local_store.head(key)

        def get(self, key: str) -> bytes:
            calls.append("get")
            return local_store.get(key)

    local_store.put("uploads/u1", PNG, content_type="image/png")
    plain = Plain()
    assert not isinstance(plain, BoundedReader)
    assert get_at_most(plain, "uploads/u1", len(PNG)) == PNG  # type: ignore[arg-type]
    with pytest.raises(ObjectTooLargeError):
        get_at_most(plain, "uploads/u1", 10)  # type: ignore[arg-type]
    assert calls == ["head", "get", "head"]
