"""A store on the local filesystem (`file:///abs/path`), with links signed by `LinkSigner` and served by the API."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path

from storage.base import DEFAULT_EXPIRY, ObjectInfo
from storage.errors import (
    InvalidKeyError,
    NotSupportedError,
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from storage.keys import validate_key
from storage.metadata import validate_metadata
from storage.signing import LinkSigner

#: Top-level directory under the root that holds sidecars; keys may not start with it.
RESERVED_DIR = ".sdqueue"
_SIDECARS = Path(RESERVED_DIR, "meta")
_FALLBACK_TYPE = "application/octet-stream"


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

    @property
    def signer(self) -> LinkSigner | None:
        """The signer behind `presign_get`, which the API's file route uses to `verify` links; None if unsigned."""
        return self._signer

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        content_disposition: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `data` under `key`, replacing any object there; returns what was stored."""
        path = self._path(key)
        sidecar = {
            "content_type": content_type,
            "content_disposition": content_disposition,
            "metadata": validate_metadata(metadata),
            "etag": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        }
        with _os_errors(key):
            # Data before sidecar: a crash in between leaves the new bytes with the old type, never a torn file.
            _write_atomic(path, data)
            _write_atomic(self._sidecar(key), json.dumps(sidecar).encode())
        return self.head(key)

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises `ObjectNotFoundError` when there are none."""
        path = self._path(key)
        with _os_errors(key):
            try:
                return path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise ObjectNotFoundError(f"no object {key!r} in {self.url}") from None

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


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sdq-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
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
