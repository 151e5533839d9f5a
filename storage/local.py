"""A store on the local filesystem (`file:///abs/path`), with links signed by `LinkSigner` and served by the API."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from storage.base import DEFAULT_EXPIRY, ObjectInfo, PutData
from storage.body import open_body
from storage.errors import (
    InvalidKeyError,
    NotSupportedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from storage.metadata import validate_metadata
from storage.object_keys import validate_key
from storage.signing import LinkSigner
from storage.uploads.base import DEFAULT_UPLOAD_EXPIRY, PresignedUpload
from storage.uploads.local import signed_put

#: Top-level directory under the root that holds sidecars; keys may not start with it.
RESERVED_DIR = ".sdqueue"
_SIDECARS = Path(RESERVED_DIR, "meta")
_FALLBACK_TYPE = "application/octet-stream"
_COPY_CHUNK_BYTES = 1024 * 1024


class LocalStore:
    """Objects as plain files under `root`; type, disposition and metadata in `root/.sdqueue/meta/<key>.json`.

    Writes are atomic (temp file in the same directory, fsync, `os.replace`), so readers never see a partial
    object. `presign_get` needs a `LinkSigner`; the API's `GET /v1/files/{key}` route checks the link with
    `LinkSigner.verify` and streams the file from `open_for_read`.
    """

    def __init__(self, root: Path, *, signer: LinkSigner | None = None) -> None:
        """`root` must be absolute; it is created on the first `put`."""
        if not root.is_absolute():
            raise StorageConfigError(f"local store root must be an absolute path; got {str(root)!r}")
        self.root = root
        self.url = root.as_uri()
        self._real_root = root.resolve()
        self._signer = signer

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    @property
    def signer(self) -> LinkSigner | None:
        """The signer behind `presign_get`, which the API's file route uses to `verify` links; None if unsigned."""
        return self._signer

    def put(
        self,
        key: str,
        data: PutData,
        *,
        content_type: str,
        content_disposition: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `data` under `key`, replacing any object there; returns what was stored.

        Integrity: the bytes are fsynced before the rename, and their MD5 becomes the etag.
        """
        path = self._path(key)
        checked = validate_metadata(metadata)
        digest = hashlib.md5(usedforsecurity=False)

        def write(file: BinaryIO) -> None:
            with open_body(data, threshold_bytes=_COPY_CHUNK_BYTES) as body:
                if body.data is not None:
                    digest.update(body.data)
                    file.write(body.data)
                    return
                assert body.file is not None
                while chunk := body.file.read(_COPY_CHUNK_BYTES):
                    digest.update(chunk)
                    file.write(chunk)

        with _os_errors(key):
            # Data before sidecar: a crash in between leaves the new bytes with the old type, never a torn file.
            _write_atomic(path, write)
            sidecar = {
                "content_type": content_type,
                "content_disposition": content_disposition,
                "metadata": checked,
                "etag": digest.hexdigest(),
            }
            _write_atomic(self._sidecar(key), json.dumps(sidecar).encode())
        return self.head(key)

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises `ObjectNotFoundError` when there are none."""
        return self._read(key, None)

    def get_at_most(self, key: str, max_bytes: int) -> bytes:
        """`storage.base.BoundedReader`: the open file's size first; never more than `max_bytes` + 1 read."""
        return self._read(key, max_bytes)

    def _read(self, key: str, max_bytes: int | None) -> bytes:
        path = self._path(key)
        with _os_errors(key):
            try:
                with path.open("rb") as file:
                    if max_bytes is None:
                        return file.read()
                    size = os.fstat(file.fileno()).st_size
                    data = file.read(max_bytes + 1) if size <= max_bytes else b""
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise ObjectNotFoundError(f"no object {key!r} in {self.url}") from None
        if size > max_bytes or len(data) > max_bytes:  # grew while it was read
            raise ObjectTooLargeError(key, max(size, len(data)), max_bytes)
        return data

    def head(self, key: str) -> ObjectInfo:
        """Size, type, disposition and metadata of `key`; raises `ObjectNotFoundError` when absent."""
        path = self._path(key)
        with _os_errors(key):
            if not path.is_file():
                raise ObjectNotFoundError(f"no object {key!r} in {self.url}")
            stat = path.stat()
            try:
                sidecar = json.loads(self._sidecar(key).read_text())
            except FileNotFoundError:  # a file put there by hand
                sidecar = {"content_type": mimetypes.guess_type(path.name)[0] or _FALLBACK_TYPE}
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            content_type=sidecar.get("content_type"),
            etag=sidecar.get("etag"),
            last_modified=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
            metadata=sidecar.get("metadata") or {},
            content_disposition=sidecar.get("content_disposition"),
        )

    def get_into(self, key: str, file: BinaryIO) -> int:
        """Copy the bytes of `key` into `file`; returns how many."""
        path = self._path(key)
        with _os_errors(key):
            try:
                with open(path, "rb") as source:
                    before = file.tell() if file.seekable() else 0
                    shutil.copyfileobj(source, file, _COPY_CHUNK_BYTES)
                    return (file.tell() - before) if file.seekable() else os.fstat(source.fileno()).st_size
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise ObjectNotFoundError(f"no object {key!r} in {self.url}") from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order (UTF-8 byte order, as S3 lists)."""
        if prefix:
            validate_key(prefix.rstrip("/") or "-")
        # Only the directory the prefix names (up to its last '/') can hold matches: walk just that one.
        base = self.root / prefix.rpartition("/")[0]
        keys: list[str] = []
        with _os_errors(prefix or "/"):
            for directory, subdirs, files in os.walk(base):
                relative = Path(directory).relative_to(self.root).as_posix()
                if relative == ".":
                    subdirs[:] = [name for name in subdirs if name != RESERVED_DIR]
                for name in files:
                    key = name if relative == "." else f"{relative}/{name}"
                    if key.startswith(prefix) and not name.startswith(".sdq-"):
                        keys.append(key)
        for key in sorted(keys, key=lambda k: k.encode("utf-8")):
            try:
                yield self.head(key)
            except (ObjectNotFoundError, InvalidKeyError):  # deleted meanwhile, or a name no backend could hold
                continue

    def delete(self, key: str) -> None:
        """Remove `key` and its sidecar; deleting an absent key is not an error."""
        path = self._path(key)
        with _os_errors(key):
            if path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)
            self._sidecar(key).unlink(missing_ok=True)

    def open_for_read(self, key: str) -> tuple[Path, ObjectInfo]:
        """The file holding `key` (inside the root, symlinks resolved) and its info, for streaming it."""
        info = self.head(key)
        return self._path(key).resolve(), info

    def presign_get(self, key: str, *, expires_in: timedelta = DEFAULT_EXPIRY) -> str:
        """A link to the API's file route for `key`; raises `NotSupportedError` when the store has no signer."""
        if self._signer is None:
            raise NotSupportedError(f"{self.url} has no LinkSigner, so it cannot presign; pass signer=")
        return self._signer.sign(key, expires_in=expires_in)

    def presign_upload(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: timedelta = DEFAULT_UPLOAD_EXPIRY
    ) -> PresignedUpload:
        """A signed PUT link to the API's file route for `key`; raises `NotSupportedError` without a signer."""
        if self._signer is None:
            raise NotSupportedError(f"{self.url} has no LinkSigner, so it cannot presign uploads; pass signer=")
        self._path(key)
        return signed_put(self._signer, key, content_type=content_type, max_bytes=max_bytes, expires_in=expires_in)

    def _path(self, key: str) -> Path:
        validate_key(key)
        if key.split("/", 1)[0] == RESERVED_DIR:
            raise InvalidKeyError(f"object keys may not start with {RESERVED_DIR + '/'!r} in a local store")
        path = self.root / key
        if not path.resolve().is_relative_to(self._real_root):
            raise InvalidKeyError(f"object key {key!r} leads out of {self.url} through a symlink")
        return path

    def _sidecar(self, key: str) -> Path:
        return self.root / _SIDECARS / f"{key}.json"


def _write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sdq-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(data, bytes):
                file.write(data)
            else:
                data(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide objects from a server running as another user
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable on POSIX; Windows cannot open directories and needs no such step.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _os_errors(key: str) -> Iterator[None]:
    try:
        yield
    except StorageError:
        raise
    except PermissionError as exc:
        raise StoragePermissionError(f"not permitted on object {key!r}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"filesystem error on object {key!r}: {exc}") from exc
