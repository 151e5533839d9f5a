"""LoRA adapters on a loaded pipeline: loaded by name from the model cache, activated with a scale per job.

A pipeline is shared by the jobs that ask for its model, so each call states the whole LoRA set it wants:
adapters already loaded are only re-weighted (`set_adapters`), new ones are loaded once and kept for later jobs
(up to `max_loaded`, least recently used deleted first), and a job with no LoRA disables them all. Adapters stay
unfused: fusing would change the base weights, and unfusing does not restore them bit for bit.

A LoRA at scale 0 adds exactly nothing, so it renders the same image as no LoRA.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from gpu_worker.cache import CacheLease, ModelCache
from gpu_worker.errors import ModelLoadError, WorkerError
from gpu_worker.sources import first_line, lora_weights_file

log = logging.getLogger(__name__)


class LoraLike(Protocol):
    """Anything naming a LoRA and its scale, such as `producer.jobs.LoraRequest`."""

    @property
    def name(self) -> str: ...

    @property
    def scale(self) -> float: ...


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA a job asks for: its reference (a name in the cache, a hub id, a path or a storage URL) and scale."""

    name: str
    scale: float = 1.0


def as_specs(loras: Iterable[LoraLike]) -> tuple[LoraSpec, ...]:
    """Normalise a job's LoRA list into hashable specs (order kept: it is the order adapters are applied in)."""
    return tuple(LoraSpec(item.name, float(item.scale)) for item in loras)


class PipelineLoras:
    """The LoRA state of one loaded pipeline. Not thread-safe: the caller holds the pipeline for one job at a time."""

    def __init__(self, pipe: Any, cache: ModelCache, *, max_loaded: int = 8) -> None:
        self.pipe = pipe
        self.cache = cache
        self.max_loaded = max_loaded
        self.active: tuple[LoraSpec, ...] = ()
        # LoRA name → (adapter name, cache lease), least recently used first.
        self._loaded: OrderedDict[str, tuple[str, CacheLease]] = OrderedDict()
        self._enabled = True

    @property
    def loaded(self) -> list[str]:
        """Names of the LoRAs loaded into the pipeline, least recently used first."""
        return list(self._loaded)

    def apply(self, loras: Iterable[LoraLike]) -> float:
        """Make exactly `loras` active at their scales; returns the seconds spent loading new adapters."""
        specs = as_specs(loras)
        if specs == self.active:
            return 0.0
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ModelLoadError(f"LoRA listed twice: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
        new = [name for name in names if name not in self._loaded]
        started = time.perf_counter()
        for name in names:
            self._load(name)
        load_s = time.perf_counter() - started if new else 0.0
        self._trim(keep=set(names))
        if not specs:
            if self._loaded and self._enabled:
                self.pipe.disable_lora()
                self._enabled = False
        else:
            if not self._enabled:
                self.pipe.enable_lora()
                self._enabled = True
            adapters = [self._loaded[spec.name][0] for spec in specs]
            self.pipe.set_adapters(adapters, adapter_weights=[spec.scale for spec in specs])
        self.active = specs
        return load_s

    def close(self) -> None:
        """Release the cache leases of every loaded LoRA (the pipeline is being dropped)."""
        for _, lease in self._loaded.values():
            lease.release()
        self._loaded.clear()

    def _load(self, name: str) -> None:
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return
        lease = self.cache.acquire_lora(name)
        adapter = "sdq_" + hashlib.sha256(name.encode()).hexdigest()[:16]  # any name: PEFT wants identifiers
        try:
            weights = lora_weights_file(lease.path, name)
            with warnings.catch_warnings():
                # PEFT warns on every adapter after the first; several adapters per pipeline is the design here.
                warnings.filterwarnings(
                    "ignore", message="Already found a `peft_config` attribute", category=UserWarning
                )
                self.pipe.load_lora_weights(str(lease.path), weight_name=weights, adapter_name=adapter)
        except WorkerError:
            lease.release()
            raise
        except Exception as exc:
            lease.release()
            self._forget(adapter)
            raise ModelLoadError(f"LoRA {name}: failed to load ({type(exc).__name__}: {first_line(exc)})") from exc
        self._loaded[name] = (adapter, lease)
        log.info("loaded LoRA %s", name)

    def _trim(self, *, keep: set[str]) -> None:
        while len(self._loaded) > self.max_loaded:
            victim = next((name for name in self._loaded if name not in keep), None)
            if victim is None:
                return
            adapter, lease = self._loaded.pop(victim)
            self.pipe.delete_adapters(adapter)
            lease.release()
            log.info("unloaded LoRA %s", victim)

    def _forget(self, adapter: str) -> None:
        """Remove a half-loaded adapter so that a failed load leaves the pipeline as it was."""
        try:
            loaded = {name for names in self.pipe.get_list_adapters().values() for name in names}
            if adapter in loaded:
                self.pipe.delete_adapters(adapter)
        except Exception:  # pragma: no cover - best effort after a failure already being reported
            log.warning("could not remove the half-loaded adapter %s", adapter, exc_info=True)
