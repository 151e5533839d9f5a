"""Fixtures for the GPU worker tests: the tiny pipeline, loaded once per session on the CPU.

`model_cache` (the tiny model, built once per session) comes from `tests/conftest.py`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.jobs import JobRequest

# Set before huggingface_hub is first imported (it reads this once, at import): no test may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run torch on one CPU thread: the tiny model's ops are too small to gain from more, and on a busy machine
    (CI, parallel jobs) OpenMP threads waiting on each other make a 2-thread run up to 10x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_dir(model_cache: Path) -> Path:
    """The tiny pipeline's directory (do not modify it: copy it first)."""
    return model_cache / "tiny"


@pytest.fixture(scope="session")
def tiny_pipe(model_cache: Path) -> Any:
    """The tiny pipeline, loaded on the CPU through `load_pipeline`, shared by the whole session."""
    from gpu_worker.pipelines import load_pipeline

    return load_pipeline("tiny", cache_dir=model_cache, device="cpu", local_files_only=True)


@pytest.fixture
def job() -> Callable[..., JobRequest]:
    """Make a small, resolved job request; keyword arguments override the defaults."""

    def make(**overrides: Any) -> JobRequest:
        fields: dict[str, Any] = {
            "prompt": "a photo of a cat",
            "model": "tiny",
            "width": 64,
            "height": 64,
            "steps": 4,
            "seed": 1234,
        }
        return JobRequest(**(fields | overrides))

    return make


#: The tiny pipeline of every model family, by model ref (SD 1.x, SDXL, SD 3, Flux).
FAMILY_MODELS = ("tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux")


@pytest.fixture(scope="session")
def family_pipes(model_cache: Path) -> Callable[[str], Any]:
    """Load a tiny family's pipeline (built into the session's model cache on first use) once per session; each
    call hands it out with its own default scheduler, whatever scheduler an earlier test's job left on it."""
    from gpu_worker.pipelines import load_pipeline
    from gpu_worker.schedulers import apply_scheduler
    from producer.jobs import Scheduler

    loaded: dict[str, Any] = {}

    def get(model: str) -> Any:
        if model not in loaded:
            loaded[model] = load_pipeline(model, cache_dir=model_cache, device="cpu")
        apply_scheduler(loaded[model], Scheduler.DEFAULT)
        return loaded[model]

    return get
