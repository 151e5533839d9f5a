"""What only the local backend does: sidecars out of sight, atomic files, a root nothing escapes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from storage import (
    InvalidKeyError,
    LocalStore,
    NotSupportedError,
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
)


def _files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_objects_are_plain_files_and_sidecars_stay_in_the_reserved_dir(local_store: LocalStore) -> None:
    local_store.put("jobs/j1/0.png", b"png", content_type="image/png", metadata={"seed": "1"})
    local_store.put("jobs/j1/0.png", b"png2", content_type="image/png")

    assert (local_store.root / "jobs/j1/0.png").read_bytes() == b"png2"
    assert _files_under(local_store.root) == [".sdqueue/meta/jobs/j1/0.png.json", "jobs/j1/0.png"]


def test_delete_removes_the_sidecar_too(local_store: LocalStore) -> None:
    local_store.put("a.txt", b"a", content_type="text/plain")
    local_store.delete("a.txt")
    assert _files_under(local_store.root) == []


def test_keys_in_the_reserved_dir_are_refused(local_store: LocalStore) -> None:
    with pytest.raises(InvalidKeyError, match=r"\.sdqueue"):
        local_store.get(".sdqueue/meta/a.txt.json")


def test_a_symlink_cannot_lead_out_of_the_root(local_store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    local_store.root.mkdir(parents=True)
    (local_store.root / "link").symlink_to(outside)

    with pytest.raises(InvalidKeyError, match="symlink"):
        local_store.get("link/secret.txt")
    with pytest.raises(InvalidKeyError, match="symlink"):
        local_store.put("link/new.txt", b"x", content_type="text/plain")
    assert not (outside / "new.txt").exists()


def test_open_for_read_gives_the_file_and_its_info(local_store: LocalStore) -> None:
    local_store.put("a/b.png", b"png", content_type="image/png", content_disposition="inline")

    path, info = local_store.open_for_read("a/b.png")

    assert path.read_bytes() == b"png"
    assert path.is_relative_to(local_store.root.resolve())
    assert (info.content_type, info.content_disposition, info.size) == ("image/png", "inline", 3)


def test_open_for_read_of_a_missing_key_is_not_found(local_store: LocalStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        local_store.open_for_read("missing.png")


def test_a_file_put_there_by_hand_is_served_with_a_guessed_type(local_store: LocalStore) -> None:
    local_store.root.mkdir(parents=True)
    (local_store.root / "by-hand.json").write_text("{}")

    info = local_store.head("by-hand.json")
    assert (info.content_type, info.size, dict(info.metadata)) == ("application/json", 2, {})


def test_a_directory_is_not_an_object(local_store: LocalStore) -> None:
    local_store.put("dir/a.txt", b"a", content_type="text/plain")

    with pytest.raises(ObjectNotFoundError):
        local_store.get("dir")
    with pytest.raises(ObjectNotFoundError):
        local_store.head("dir")
    local_store.delete("dir")
    assert local_store.get("dir/a.txt") == b"a"


def test_an_object_cannot_also_be_a_directory(local_store: LocalStore) -> None:
    # S3 allows both "a" and "a/b"; a filesystem cannot, so the second put fails loudly.
    local_store.put("a", b"a", content_type="text/plain")
    with pytest.raises(StorageError):
        local_store.put("a/b", b"b", content_type="text/plain")


def test_objects_are_world_readable_files(local_store: LocalStore) -> None:
    local_store.put("a.txt", b"a", content_type="text/plain")
    assert (local_store.root / "a.txt").stat().st_mode & 0o777 == 0o644


def test_relative_root_is_refused() -> None:
    with pytest.raises(StorageConfigError, match="absolute"):
        LocalStore(Path("relative/dir"))


def test_without_a_signer_presign_is_not_supported(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert store.signer is None
    with pytest.raises(NotSupportedError):
        store.presign_get("a.png")


def test_the_reference_file_route_answers_403_to_tampered_and_expired_links(local_store: LocalStore) -> None:
    local_store.put("a.png", b"png", content_type="image/png")
    url = urlsplit(local_store.presign_get("a.png", expires_in=timedelta(minutes=1)))

    assert httpx.get(urlunsplit(url)).status_code == 200
    assert httpx.get(urlunsplit(url._replace(path="/v1/files/b.png"))).status_code == 403
    assert httpx.get(urlunsplit(url._replace(query="expires=1&" + url.query.split("&")[1]))).status_code == 403
