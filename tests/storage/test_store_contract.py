"""The storage contract: every backend behaves the same through `ObjectStore` and `Presigner`."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from storage import (
    MAX_EXPIRY,
    InvalidExpiryError,
    InvalidKeyError,
    InvalidMetadataError,
    ObjectNotFoundError,
    ObjectStore,
    Presigner,
    PresigningStore,
)

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
