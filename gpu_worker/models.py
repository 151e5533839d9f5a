"""Pipelines kept loaded on the worker's device, so that switching between them costs nothing.

Up to `capacity` pipelines (and, with a memory budget, up to that many bytes of weights) stay on the device; past
that the least recently used idle one is evicted. With `park_on_cpu` an evicted pipeline first moves to CPU RAM
(up to `max_parked`), so switching back to it is a host-to-device copy instead of a load from disk. A pipeline a
job is using is never evicted: a load that needs its room waits for that job to end.

Every pipeline that is loaded or parked holds its model cache lease, so no process on the machine deletes its
folder. `use` reports how long getting the pipeline took (0 when it was hot) for the job's `load` timing, and
`stats` counts hits, unparks and loads for switch-time figures.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from producer.catalog import Catalog, load_catalog
from producer.holdings import Holdings

from .adapters import ImageAdapters, attach_adapters, close_adapters
from .cache import MODELS_DIR, CacheLease, ModelCache
from .errors import OutOfMemoryError
from .lora import LoraLike, PipelineLoras
from .optimize import PipelineOptions, compile_and_warm_up
from .pipelines import default_dtype, family_dtype, load_from_directory, pipeline_bytes, prepare_family
from .refiner import Refiners, attach, close_refiners
from .refs import TINY_MODELS
from .sources import weights_bytes

if TYPE_CHECKING:
    from .settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStats:
    """Counters of how `LoadedModels.use` found its pipelines, and the seconds spent getting them."""

    hits: int = 0  # already on the device: no cost
    unparks: int = 0  # moved back from CPU RAM
    loads: int = 0  # loaded from the disk cache (after downloading it, if it was not there)
    evictions: int = 0
    load_s: float = 0.0  # total seconds of unparks and loads


@dataclass
class _Entry:
    model: str
    pipe: Any
    lease: CacheLease
    loras: PipelineLoras
    size_bytes: int
    users: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # one job (or batch) at a time per pipeline
    compiled: bool = False


class LoadedModels:
    """Pipelines in memory, least recently used evicted first (see the module doc)."""

    def __init__(
        self,
        *,
        device: Any,
        capacity: int = 1,
        cache_dir: Path | None = None,
        cache: ModelCache | None = None,
        memory_budget_bytes: int | None = None,
        park_on_cpu: bool = False,
        max_parked: int = 2,
        max_loaded_loras: int = 8,
        options: PipelineOptions | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        """Give `cache` (a configured `ModelCache`) or `cache_dir` (a cache with default settings there).

        A model named in `catalog` (default: the built-in one) is loaded from its catalog source; the pipeline is
        still known by the name the job used."""
        if cache is None:
            if cache_dir is None:
                raise ValueError("LoadedModels needs a cache or a cache_dir")
            cache = ModelCache(cache_dir)
        self.cache = cache
        self.cache_dir = cache.root
        self.device = torch.device(device)
        self.dtype = default_dtype(self.device)
        self.capacity = capacity
        self.memory_budget_bytes = memory_budget_bytes
        self.park_on_cpu = park_on_cpu
        self.max_parked = max_parked
        self.max_loaded_loras = max_loaded_loras
        self.options = options or PipelineOptions()
        self.catalog = catalog or load_catalog(None)
        self._resident: OrderedDict[str, _Entry] = OrderedDict()
        self._parked: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: set[str] = set()
        self._cond = threading.Condition()
        self._stats = ModelStats()

    @classmethod
    def from_settings(cls, settings: WorkerSettings, *, device: Any) -> LoadedModels:
        """The loaded-model set and model cache a worker's settings describe."""
        cache = ModelCache(
            settings.resolved_model_cache_dir,
            budget_bytes=settings.model_cache_budget_bytes,
            lora_storage_url=settings.lora_storage_url,
            download_concurrency=settings.download_concurrency,
            storage_credentials=settings.storage_credentials(),
            max_download_bytes=settings.max_download_bytes,
        )
        return cls(
            device=device,
            capacity=settings.max_loaded_models,
            cache=cache,
            memory_budget_bytes=settings.model_memory_budget_bytes,
            park_on_cpu=settings.park_on_cpu,
            max_parked=settings.max_parked_models,
            max_loaded_loras=settings.max_loaded_loras,
            options=PipelineOptions.from_settings(settings),
            catalog=load_catalog(settings.model_catalog),
        )

    @property
    def stats(self) -> ModelStats:
        """Counters since start (a snapshot)."""
        with self._cond:
            return self._stats

    @property
    def loaded(self) -> list[str]:
        """Models on the device, least recently used first."""
        with self._cond:
            return list(self._resident)

    @property
    def parked(self) -> list[str]:
        """Models parked in CPU RAM, least recently used first."""
        with self._cond:
            return list(self._parked)

    def holdings(self) -> Holdings:
        """What this set holds: the models on the device (by the names jobs used) and the sources in its model cache
        (installed folders, built tiny models, and the catalog's local paths that exist)."""
        cached = {entry.source for entry in self.cache.entries() if entry.kind == MODELS_DIR}
        cached |= {name for name in TINY_MODELS if (self.cache_dir / name / "model_index.json").is_file()}
        sources = (entry.source for entry in self.catalog.models.values())
        cached |= {source for source in sources if source.startswith("/") and Path(source).is_dir()}
        return Holdings(loaded=tuple(self.loaded), cached=tuple(sorted(cached)))

    @contextmanager
    def use(self, model: str, *, loras: Iterable[LoraLike] = ()) -> Iterator[tuple[Any, float]]:
        """Hold `model`'s pipeline, with exactly `loras` active, for one job or batch; yields (pipeline, seconds
        spent loading it and its LoRAs: 0 when hot).

        Raises `ModelNotFoundError`, `ModelLoadError` or `OutOfMemoryError` when the model (or a LoRA) cannot be
        had; the worker and the other loaded models carry on.
        """
        entry, load_s = self._acquire(model)
        try:
            with entry.lock:
                load_s += entry.loras.apply(loras)
                yield entry.pipe, load_s
        finally:
            with self._cond:
                entry.users -= 1
                self._cond.notify_all()

    def preload(self, models: Iterable[str]) -> dict[str, float]:
        """Fetch and load `models` (compiling and warming them up if the options say so); seconds per model.

        For boot, before the worker takes jobs. Raises what `use` raises.
        """
        seconds: dict[str, float] = {}
        models = list(dict.fromkeys(models))
        if len(models) > self.capacity:
            log.warning(
                "preloading %d models but only %d stay loaded (SDQ_MAX_LOADED_MODELS)", len(models), self.capacity
            )
        for model in models:
            started = time.perf_counter()
            with self.use(model) as (pipe, _):
                entry = self._resident[model]
                if self.options.compile and not entry.compiled:
                    compile_and_warm_up(pipe, self.options, model=model)
                    entry.compiled = True
            seconds[model] = time.perf_counter() - started
            log.info("preloaded %s in %.2f s", model, seconds[model])
        return seconds

    def close(self) -> None:
        """Unload everything and release the cache leases."""
        with self._cond:
            entries = [*self._resident.values(), *self._parked.values()]
            self._resident.clear()
            self._parked.clear()
        for entry in entries:
            _drop(entry)
        release_memory()
        self.cache.enforce_budget()

    def _acquire(self, model: str) -> tuple[_Entry, float]:
        with self._cond:
            while model in self._loading:
                self._cond.wait()
            entry = self._resident.get(model)
            if entry is not None:
                self._resident.move_to_end(model)
                entry.users += 1
                self._stats = replace(self._stats, hits=self._stats.hits + 1)
                return entry, 0.0
            self._loading.add(model)
            parked = self._parked.pop(model, None)
        started = time.perf_counter()
        try:
            entry = self._unpark(parked) if parked is not None else self._load(model)
        except BaseException:
            with self._cond:
                self._loading.discard(model)
                self._cond.notify_all()
            raise
        load_s = time.perf_counter() - started
        with self._cond:
            self._loading.discard(model)
            self._resident[model] = entry
            entry.users += 1
            kind = "unparks" if parked is not None else "loads"
            self._stats = replace(
                self._stats, load_s=self._stats.load_s + load_s, **{kind: getattr(self._stats, kind) + 1}
            )
            self._cond.notify_all()
        log.info("%s %s in %.3f s", "unparked" if parked is not None else "loaded", model, load_s)
        if parked is None:
            self.cache.enforce_budget()  # models unloaded to make room may now leave the disk too
        return entry, load_s

    def _load(self, model: str) -> _Entry:
        source = self.catalog.source_of(model)  # a catalog name (`sdxl`) loads its source (a hub id, a prefix)
        lease = self.cache.acquire(source, fp16=self.dtype == torch.float16)  # may download: outside every lock
        try:
            self._make_room(weights_bytes(lease.path, fp16=self.dtype == torch.float16))
            pipe = self._with_oom_retry(lambda: self._load_pipeline(model, lease))
        except BaseException:
            lease.release()
            raise
        attach(pipe, Refiners(self._load_refiner))
        attach_adapters(pipe, self._adapters(model, pipe))
        loras = PipelineLoras(pipe, self.cache, max_loaded=self.max_loaded_loras)
        return _Entry(model, pipe, lease, loras, pipeline_bytes(pipe))

    def _adapters(self, model: str, pipe: Any) -> ImageAdapters:
        """`pipe`'s adapter set: a catalog model's ControlNet and IP-Adapter names load their catalog sources."""

        def by_kind(kind: str) -> Callable[[str], CacheLease]:
            return lambda name: self.cache.acquire_adapter(self.catalog.adapter_source(model, kind, name))

        return ImageAdapters(pipe, by_kind("controlnets"), acquire_ip_adapter=by_kind("ip_adapters"))

    def _load_pipeline(self, model: str, lease: CacheLease) -> Any:
        dtype = family_dtype(lease.path, self.device)  # float16, or bfloat16 for SD 3 and Flux, on CUDA
        pipe = load_from_directory(lease.path, name=model, device=self.device, dtype=dtype, options=self.options)
        prepare_family(pipe, self.device)
        return pipe

    def _load_refiner(self, model: str) -> tuple[Any, Any]:
        """Load an SDXL refiner for a base pipeline's jobs; it lives (and holds its lease) as long as the base."""
        lease = self.cache.acquire(self.catalog.source_of(model), fp16=self.dtype == torch.float16)
        try:
            return self._with_oom_retry(lambda: self._load_pipeline(model, lease)), lease.release
        except BaseException:
            lease.release()
            raise

    def _unpark(self, entry: _Entry) -> _Entry:
        self._make_room(entry.size_bytes)
        try:
            self._with_oom_retry(lambda: entry.pipe.to(self.device))
        except BaseException:
            _drop(entry)
            raise
        return entry

    def _with_oom_retry(self, load: Any) -> Any:
        """Run `load`; if the device runs out of memory, evict every idle pipeline and try once more.

        The retry runs after the `except` block: inside it, the traceback would keep the failed load's frames (and
        the tensors they allocated) alive. Nothing here keeps a reference to an evicted pipeline either, so the
        collection before the retry frees its memory.
        """
        try:
            return load()
        except (OutOfMemoryError, torch.cuda.OutOfMemoryError):
            with self._cond:
                evicted = self._evict_idle()
            if not evicted:
                raise
        release_memory()
        log.warning("out of device memory while loading; evicted %d idle pipeline(s) and retrying", evicted)
        try:
            return load()
        except (OutOfMemoryError, torch.cuda.OutOfMemoryError):
            pass
        release_memory()  # the second failure's frames are gone too
        raise OutOfMemoryError("the model does not fit in device memory, even alone")

    def _evict_idle(self) -> int:
        """Evict every idle pipeline (caller holds the condition's lock); returns how many."""
        idle = [model for model, entry in self._resident.items() if entry.users == 0]
        for model in idle:
            self._evict(self._resident[model])
        return len(idle)

    def _make_room(self, needed_bytes: int) -> None:
        """Evict idle pipelines until one more fits: waits while every pipeline over the count is in use."""
        with self._cond:
            while True:
                over_count = len(self._resident) + len(self._loading) > self.capacity
                used = sum(entry.size_bytes for entry in self._resident.values())
                budget = self.memory_budget_bytes
                over_memory = budget is not None and self._resident and used + needed_bytes > budget
                if not over_count and not over_memory:
                    return
                victim = next((entry for entry in self._resident.values() if entry.users == 0), None)
                if victim is not None:
                    self._evict(victim)
                elif over_count:
                    self._cond.wait()  # every loaded pipeline is running a job; one will end
                else:
                    log.warning("model memory budget exceeded and every loaded pipeline is in use; loading anyway")
                    return

    def _evict(self, entry: _Entry) -> None:
        """Take an idle pipeline off the device (caller holds the condition's lock)."""
        del self._resident[entry.model]
        self._stats = replace(self._stats, evictions=self._stats.evictions + 1)
        dropped = []
        if self.park_on_cpu and self.max_parked > 0:
            # Moving the weights frees their device memory by reference counting, into PyTorch's allocator cache
            # where the next model's load reuses it: no garbage collection needed on this path. ControlNets and
            # IP-Adapters are released, not parked: they reload on next use.
            close_adapters(entry.pipe)
            entry.pipe.to("cpu")
            self._parked[entry.model] = entry
            log.info("parked %s in CPU RAM", entry.model)
            while len(self._parked) > self.max_parked:
                dropped.append(self._parked.popitem(last=False)[1])
        else:
            dropped.append(entry)
        for victim in dropped:
            _drop(victim)
        if dropped:
            release_memory()  # a dropped pipeline's modules hold reference cycles: only a full collection frees them


def _drop(entry: _Entry) -> None:
    """Release a pipeline for good: every reference this module holds to it goes, so a collection frees it."""
    log.info("unloading %s", entry.model)
    entry.loras.close()
    close_refiners(entry.pipe)
    close_adapters(entry.pipe)
    entry.lease.release()
    entry.loras.pipe = None
    entry.pipe = None


def release_memory() -> None:
    """Collect garbage (a dropped pipeline's modules hold reference cycles), then hand CUDA's cached blocks back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
