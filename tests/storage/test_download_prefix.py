"""`download_prefix`: a whole folder of objects to local files, the same on every backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage import FullStore, NotSupportedError, ObjectInfo, ObjectNotFoundError, download_prefix

FILES = {
    "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
    "unet/config.json": b"{}",
    "unet/diffusion_pytorch_model.safetensors": os.urandom(300_000),
    "text_encoder/sub dir/weights.bin": b"w" * 10,
}


def _upload(store: FullStore, prefix: str) -> None:
    for name, data in FILES.items():
        store.put(f"{prefix}/{name}", data, content_type="application/octet-stream")


@pytest.mark.parametrize("prefix", ["models/sd", "models/sd/", "/models/sd/"])
def test_every_object_lands_in_its_subfolder(store: FullStore, tmp_path: Path, prefix: str) -> None:
    _upload(store, "models/sd")
    store.put("models/sd-other/x.bin", b"not mine", content_type="application/octet-stream")
    dest = tmp_path / "cache" / "sd"

    written = download_prefix(store, prefix, dest, concurrency=3)

    assert sorted(written) == sorted(FILES)
    on_disk = {path.relative_to(dest).as_posix(): path.read_bytes() for path in dest.rglob("*") if path.is_file()}
    assert on_disk == FILES  # nothing else: no sibling prefix, no temporary files left behind


def test_files_are_replaced_and_strangers_left_alone(store: FullStore, tmp_path: Path) -> None:
    _upload(store, "m")
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_bytes(b"stale")
    (tmp_path / "mine.txt").write_bytes(b"keep")

    download_prefix(store, "m", tmp_path)

    assert (tmp_path / "unet" / "config.json").read_bytes() == b"{}"
    assert (tmp_path / "mine.txt").read_bytes() == b"keep"


def test_an_empty_prefix_is_object_not_found(store: FullStore, tmp_path: Path) -> None:
    store.put("models/a/x", b"x", content_type="text/plain")

    with pytest.raises(ObjectNotFoundError, match="models/b/"):
        download_prefix(store, "models/b", tmp_path / "out")
    with pytest.raises(ObjectNotFoundError):
        download_prefix(store, "models/a/x", tmp_path / "out")  # an object is not a folder
    assert not (tmp_path / "out").exists()


def test_concurrency_must_be_positive(local_store: FullStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        download_prefix(local_store, "m", tmp_path, concurrency=0)


class _PutGetOnly:
    """A store with only the four `ObjectStore` methods, like a minimal third-party backend."""

    url = "memory://"

    def put(self, key: str, data: object, **_: object) -> ObjectInfo:
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def head(self, key: str) -> ObjectInfo:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError


def test_a_store_that_cannot_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotSupportedError, match="cannot list"):
        download_prefix(_PutGetOnly(), "m", tmp_path)  # type: ignore[arg-type]
