"""Pipelines kept loaded in memory, least recently used evicted first."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .pipelines import load_pipeline

log = logging.getLogger(__name__)


class LoadedModels:
    """Up to `capacity` loaded pipelines, least recently used evicted first."""

    def __init__(self, *, cache_dir: Path, device: Any, capacity: int) -> None:
        self.cache_dir = cache_dir
        self.device = device
        self.capacity = capacity
        self._pipes: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._in_use: dict[str, threading.Lock] = {}

    @contextmanager
    def use(self, model: str) -> Iterator[tuple[Any, float]]:
        """Hold `model`'s pipeline for one job (a pipeline's scheduler is per call, so one job at a time)."""
        pipe, load_s = self._get(model)
        with self._in_use[model]:
            yield pipe, load_s

    def _get(self, model: str) -> tuple[Any, float]:
        with self._lock:
            if model in self._pipes:
                self._pipes.move_to_end(model)
                return self._pipes[model], 0.0
            while len(self._pipes) >= self.capacity:
                evicted, _ = self._pipes.popitem(last=False)
                log.info("unloading %s", evicted)
                _release_memory()
            started = time.perf_counter()
            pipe = load_pipeline(model, cache_dir=self.cache_dir, device=self.device)
            self._pipes[model] = pipe
            self._in_use.setdefault(model, threading.Lock())
            return pipe, time.perf_counter() - started


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a worker dependency
        pass
