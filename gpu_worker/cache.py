"""The model cache on local NVMe (`SDQ_MODEL_CACHE_DIR`), shared by every worker process on the machine.

Layout under the cache root:

    tiny/, tiny-*/        the built-in test pipelines and adapters (built, never downloaded; not in the budget)
    models/<key>/         pipelines from the Hub or a storage prefix, one folder per reference (and precision)
    loras/<key>/          LoRA adapters; `<key>` is the LoRA's own name for bare names
    adapters/<key>/       ControlNets and IP-Adapters (any folder of safetensors weights and configs)
    .staging/             installs in progress (a crashed one is cleared by the next install of the same key)
    .locks/               lock files: `<key>.install` (one download at a time) and `<key>.use` (in use)

An install downloads into `.staging/`, verifies what arrived and renames the folder into place, so a model folder
either is complete or does not exist. A cross-process file lock per key makes concurrent workers download once:
the first installs, the others wait and then find it there. Each process that has a model loaded holds a shared
`flock` on its `.use` file (a `CacheLease`), which the evictor tests with a non-blocking exclusive lock: a model
loaded anywhere on the machine is never deleted, and a lock dies with its process, so a crash leaves nothing stale.
With a disk budget, the least recently used models (the time stamp of their `.sdqueue-cache.json`) go first.
Local paths are used in place, never copied or deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock, Timeout

from gpu_worker import sources
from gpu_worker.errors import ModelLoadError, ModelNotFoundError
from gpu_worker.refs import ModelRef, ModelSource
from gpu_worker.tiny import build_tiny_pipeline, is_built
from storage.credentials import StorageCredentials

log = logging.getLogger(__name__)

MODELS_DIR = "models"
LORAS_DIR = "loras"
ADAPTERS_DIR = "adapters"
#: Written into each installed folder; its modification time is the folder's last use.
META_FILE = ".sdqueue-cache.json"
_LOCKS_DIR = ".locks"
_STAGING_DIR = ".staging"


@dataclass(frozen=True)
class CacheEntry:
    """One installed model or LoRA, as the evictor sees it."""

    kind: str  # "models" or "loras"
    key: str
    path: Path
    source: str
    size_bytes: int
    last_used: float


class CacheLease:
    """A process's hold on one cached folder: while held (anywhere on the machine) it is never evicted."""

    def __init__(self, path: Path, *, installed: bool = False, fd: int | None = None) -> None:
        #: The folder to load from.
        self.path = path
        #: True when this call downloaded (or built) the folder, False when it was already there.
        self.installed = installed
        self._fd = fd

    def release(self) -> None:
        """Let the folder be evicted again (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops its flock

    def __enter__(self) -> CacheLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class ModelCache:
    """Installs models and LoRAs into `root` on first use and hands out leases on them (see the module doc)."""

    def __init__(
        self,
        root: Path,
        *,
        budget_bytes: int | None = None,
        local_files_only: bool = False,
        lora_storage_url: str | None = None,
        download_concurrency: int = 8,
        install_timeout_s: float = 3600.0,
        storage_credentials: StorageCredentials | None = None,
        max_download_bytes: int | None = None,
    ) -> None:
        """`local_files_only` forbids downloads: a model that is not installed is then `ModelNotFoundError`.

        `storage_credentials` (a `storage.StorageCredentials`) open model buckets with the worker's explicit
        secrets; without them each SDK's standard credential chain applies. `max_download_bytes` caps one install,
        checked from the source's listing before anything is copied."""
        self.root = Path(root)
        self.budget_bytes = budget_bytes
        self.local_files_only = local_files_only
        self.lora_storage_url = lora_storage_url
        self.download_concurrency = download_concurrency
        self.storage_credentials = storage_credentials
        self.install_timeout_s = install_timeout_s
        self.max_download_bytes = max_download_bytes

    def acquire(self, model: str, *, fp16: bool = False) -> CacheLease:
        """The local folder of pipeline `model`, installing it first if needed, with a lease on it.

        `fp16` picks which weights a Hub download fetches. Raises `ModelNotFoundError` or `ModelLoadError`.
        """
        ref = ModelRef.parse(model)
        if ref.source is ModelSource.TINY:
            path = self.root / ref.location
            fresh = not is_built(path, ref.location)
            try:
                build_tiny_pipeline(path, name=ref.location)
            except Exception as exc:
                raise ModelLoadError(f"could not build the tiny model in {path}: {exc}") from exc
            return CacheLease(path, installed=fresh)
        if ref.source is ModelSource.LOCAL:
            path = Path(ref.location)
            if not path.is_dir():
                raise ModelNotFoundError(f"{path}: no such model directory on this worker")
            sources.verify_pipeline_dir(path, str(path))
            return CacheLease(path)
        suffix = (sources.FP16_VARIANT if fp16 else "fp32",) if ref.source is ModelSource.HUB else ()
        return self._acquire(MODELS_DIR, ref.cache_key(*suffix), ref, fp16=fp16)

    def acquire_lora(self, name: str) -> CacheLease:
        """The local folder of LoRA `name`, installing it first if needed, with a lease on it."""
        ref = ModelRef.parse_lora(name)
        if ref.source is ModelSource.LOCAL:
            path = Path(ref.location)
            if not path.is_dir():
                raise ModelNotFoundError(f"LoRA {path}: no such directory on this worker")
            return CacheLease(path)
        return self._acquire(LORAS_DIR, ref.cache_key(), ref, fp16=False)

    def acquire_adapter(self, name: str) -> CacheLease:
        """The local folder of a ControlNet or IP-Adapter `name` (a tiny one, a path, a hub id or a storage URL),
        installing it first if needed, with a lease on it."""
        ref = ModelRef.parse(name, subpaths=True)
        if ref.source is ModelSource.TINY:
            return self.acquire(name)
        if ref.source is ModelSource.LOCAL:
            path = Path(ref.location)
            if not path.is_dir():
                raise ModelNotFoundError(f"{path}: no such directory on this worker")
            return CacheLease(path)
        return self._acquire(ADAPTERS_DIR, ref.cache_key(), ref, fp16=False)

    def entries(self) -> list[CacheEntry]:
        """Every folder this cache installed (local paths, `tiny` and hand-placed LoRAs are not listed)."""
        found = []
        for kind in (MODELS_DIR, LORAS_DIR, ADAPTERS_DIR):
            for meta in (self.root / kind).glob(f"*/{META_FILE}"):
                try:
                    data = json.loads(meta.read_text(encoding="utf-8"))
                    last_used = meta.stat().st_mtime
                except (OSError, ValueError):
                    continue  # being evicted right now, or damaged: not ours to count
                found.append(
                    CacheEntry(kind, meta.parent.name, meta.parent, data["source"], int(data["size_bytes"]), last_used)
                )
        return found

    def in_use(self, entry: CacheEntry) -> bool:
        """Whether any process holds a lease on `entry`."""
        fd = self._open_lock(entry.kind, entry.key, "use")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def enforce_budget(self) -> list[str]:
        """Delete least recently used folders no process uses until the cache fits its budget; their keys."""
        if self.budget_bytes is None:
            return []
        removed: list[str] = []
        with FileLock(self._lock_path("cache", "evict", "lock"), timeout=self.install_timeout_s):
            entries = sorted(self.entries(), key=lambda entry: entry.last_used)
            total = sum(entry.size_bytes for entry in entries)
            for entry in entries:
                if total <= self.budget_bytes:
                    break
                if self._remove(entry):
                    total -= entry.size_bytes
                    removed.append(entry.key)
            if total > self.budget_bytes:
                log.warning(
                    "model cache %s holds %.2f GB, over its %.2f GB budget: the rest is in use",
                    self.root,
                    total / 1e9,
                    self.budget_bytes / 1e9,
                )
        for key in removed:
            log.info("evicted %s from the model cache", key)
        return removed

    def _acquire(self, kind: str, key: str, ref: ModelRef, *, fp16: bool) -> CacheLease:
        path = self.root / kind / key
        # The shared lock first: it waits only while an evictor is removing this very folder, and once held the
        # folder cannot disappear between the check below and the caller's load.
        fd = self._open_lock(kind, key, "use")
        installed = False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not path.is_dir():
                installed = self._install(kind, key, ref, path, fp16=fp16)
            _touch(path)
        except BaseException:
            os.close(fd)
            raise
        if installed:
            self.enforce_budget()  # never removes `path`: this process holds its lease
        return CacheLease(path, installed=installed, fd=fd)

    def _install(self, kind: str, key: str, ref: ModelRef, path: Path, *, fp16: bool) -> bool:
        what = "LoRA " if kind == LORAS_DIR else ""
        if self.local_files_only:
            raise ModelNotFoundError(f"{what}{ref}: not in the worker's model cache, and downloads are off")
        if ref.source is ModelSource.NAMED and not self.lora_storage_url:
            raise ModelNotFoundError(
                f"LoRA {ref}: not in the model cache ({path}) and no LoRA storage prefix (SDQ_LORA_STORAGE_URL) is set"
            )
        try:
            lock = FileLock(self._lock_path(kind, key, "install"), timeout=self.install_timeout_s)
            with lock:
                if path.is_dir():  # another process installed it while this one waited for the lock
                    return False
                self._download(kind, key, ref, path, fp16=fp16)
                return True
        except Timeout as exc:
            raise ModelLoadError(f"{what}{ref}: another process held the install lock for too long") from exc

    def _download(self, kind: str, key: str, ref: ModelRef, path: Path, *, fp16: bool) -> None:
        staging_root = self.root / _STAGING_DIR
        staging_root.mkdir(parents=True, exist_ok=True)
        for leftover in staging_root.glob(f"{key}.*"):  # a crashed install of this key (we hold its lock)
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=staging_root))
        started = time.perf_counter()
        try:
            self._fetch(kind, ref, staging, fp16=fp16)
            shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
            if kind == LORAS_DIR:
                sources.lora_weights_file(staging, str(ref))
            elif kind == ADAPTERS_DIR:
                if not any(staging.rglob("*.safetensors")):
                    raise ModelNotFoundError(f"{ref}: no .safetensors weights in it")
            else:
                sources.verify_pipeline_dir(staging, str(ref))
            size = sum(file.stat().st_size for file in staging.rglob("*") if file.is_file())
            meta = {"source": str(ref), "size_bytes": size, "installed_at": time.time()}
            (staging / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
            path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("installed %s into %s (%.1f MB in %.2f s)", ref, path, size / 1e6, time.perf_counter() - started)

    def _fetch(self, kind: str, ref: ModelRef, staging: Path, *, fp16: bool) -> None:
        concurrency, cap = self.download_concurrency, self.max_download_bytes
        what = {LORAS_DIR: "lora", ADAPTERS_DIR: "adapter"}.get(kind, "model")
        if ref.source is ModelSource.HUB:
            sources.download_hub(ref, staging, fp16=fp16, kind=what, concurrency=concurrency, max_bytes=cap)
        elif ref.source is ModelSource.STORAGE:
            credentials = self.storage_credentials
            sources.download_storage(
                ref, staging, concurrency=concurrency, credentials=credentials, kind=what, max_bytes=cap
            )
        elif ref.source is ModelSource.NAMED:
            assert self.lora_storage_url is not None  # checked by _install
            url = ModelRef(ModelSource.STORAGE, _join_url(self.lora_storage_url, ref.location))
            sources.download_storage(url, staging, concurrency=concurrency, kind=what, max_bytes=cap)
        else:  # pragma: no cover - tiny and local paths are never installed
            raise AssertionError(ref)

    def _remove(self, entry: CacheEntry) -> bool:
        fd = self._open_lock(entry.kind, entry.key, "use")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            (self.root / _STAGING_DIR).mkdir(parents=True, exist_ok=True)
            trash = Path(tempfile.mkdtemp(prefix=f"{entry.key}.evicted-", dir=self.root / _STAGING_DIR))
            os.rename(entry.path, trash / entry.key)  # gone for readers at once; the slow delete follows unlocked
        finally:
            os.close(fd)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _lock_path(self, kind: str, key: str, purpose: str) -> Path:
        folder = self.root / _LOCKS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{kind}--{key}.{purpose}"

    def _open_lock(self, kind: str, key: str, purpose: str) -> int:
        return os.open(self._lock_path(kind, key, purpose), os.O_RDWR | os.O_CREAT, 0o644)


def _touch(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # a hand-placed LoRA folder: not managed, never evicted
        os.utime(path / META_FILE)


def _join_url(prefix: str, name: str) -> str:
    parts = urlsplit(prefix)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))
