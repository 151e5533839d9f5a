"""Download every object under a prefix into a local folder, in parallel: how model folders leave a bucket."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

from storage.base import Lister, ObjectInfo, ObjectStore
from storage.errors import InvalidKeyError, NotSupportedError, ObjectNotFoundError, StorageError
from storage.object_keys import validate_key


def download_prefix(
    store: ObjectStore,
    prefix: str,
    dest: Path,
    *,
    concurrency: int = 8,
    plan: Callable[[list[ObjectInfo]], list[ObjectInfo]] | None = None,
) -> list[str]:
    """Copy each object under the folder `prefix` to `dest/<key relative to prefix>`; returns those relative keys.

    `prefix` names a folder ("models/sd15" and "models/sd15/" alike; "" is the whole store). Each file is written
    to a temporary name beside its target and renamed into place once complete, so a reader never sees a partial
    file; subfolders are created as needed; files already in `dest` that are not in the store are left alone.
    Raises `ObjectNotFoundError` when nothing is under `prefix`, `NotSupportedError` when the store cannot list.

    `plan` sees the whole listing (keys relative to `prefix`) before anything is copied and returns the objects to
    copy, or raises: where a caller filters what it wants and checks sizes against its caps.
    """
    if not isinstance(store, Lister):
        raise NotSupportedError(f"{store!r} cannot list objects, so it cannot download a prefix")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1; got {concurrency}")
    folder = prefix.strip("/")
    if folder:
        validate_key(folder)
    start = f"{folder}/" if folder else ""
    listing = list(store.list(start))
    if not listing:
        raise ObjectNotFoundError(f"no objects under {start or '/'!r} in {getattr(store, 'url', store)}")
    if plan is not None:
        chosen = {info.key for info in plan([replace(info, key=info.key[len(start) :]) for info in listing])}
        listing = [info for info in listing if info.key[len(start) :] in chosen]
        if not listing:
            raise ObjectNotFoundError(f"nothing wanted under {start or '/'!r} in {getattr(store, 'url', store)}")
    keys = [info.key for info in listing]
    relative = [key[len(start) :] for key in keys]
    for name in relative:
        validate_key(name)  # listed keys come from the server: never let one write outside `dest`
    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=min(concurrency, len(keys)), thread_name_prefix="sdq-download") as pool:
        futures = [
            pool.submit(_download_one, store, key, dest / name) for key, name in zip(keys, relative, strict=True)
        ]
        for future in futures:
            future.result()
    return relative


def _download_one(store: Lister, key: str, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InvalidKeyError(f"{key!r} needs {target.parent} to be a folder, but a file is there") from None
    except OSError as exc:
        raise StorageError(f"cannot create {target.parent}: {exc}") from exc
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            store.get_into(key, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the files from other users of a shared cache
        os.replace(tmp, target)
    except BaseException as exc:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):  # the local disk, not the store
            raise StorageError(f"cannot write {target}: {exc}") from exc
        raise
