"""Pipelines in memory: hot switches, LRU eviction, parking in CPU RAM, in-use protection, leases, load failures."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from gpu_worker.cache import ModelCache
from gpu_worker.errors import ModelLoadError, ModelNotFoundError
from gpu_worker.models import LoadedModels
from gpu_worker.pipelines import pipeline_bytes
from tests.support import wait_for


@pytest.fixture(scope="module")
def copies(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three distinct models (copies of tiny in their own folders), named by absolute path."""
    root = tmp_path_factory.mktemp("copies")
    paths = []
    for name in ("a", "b", "c"):
        shutil.copytree(model_cache / "tiny", root / name)
        paths.append(str(root / name))
    return paths


def test_a_hot_model_costs_nothing_to_switch_to(copies: list[str], tmp_path: Path) -> None:
    models = LoadedModels(cache_dir=tmp_path, device="cpu", capacity=2)
    a, b = copies[:2]
    timings = []
    for model in (a, b, a, b, a):
        with models.use(model) as (pipe, load_s):
            assert pipe.device.type == "cpu"
            timings.append(load_s)
    assert timings[0] > 0 and timings[1] > 0 and timings[2:] == [0.0, 0.0, 0.0]
    assert (models.stats.loads, models.stats.hits, models.stats.evictions) == (2, 3, 0)
    assert models.loaded == [b, a]


def test_the_least_recently_used_model_is_unloaded_first(copies: list[str], tmp_path: Path) -> None:
    models = LoadedModels(cache_dir=tmp_path, device="cpu", capacity=2)
    a, b, c = copies
    for model in (a, b, a, c):
        with models.use(model):
            pass
    assert models.loaded == [a, c]
    assert models.stats.evictions == 1 and models.parked == []


def test_an_evicted_model_parks_in_cpu_ram_and_comes_back_without_a_load(copies: list[str], tmp_path: Path) -> None:
    models = LoadedModels(cache_dir=tmp_path, device="cpu", capacity=1, park_on_cpu=True, max_parked=1)
    a, b, c = copies
    with models.use(a) as (first_a, _):
        pass
    with models.use(b):
        pass
    assert models.loaded == [b] and models.parked == [a]
    with models.use(a) as (again_a, _):
        assert again_a is first_a  # the same pipeline object: nothing was read from disk
    assert (models.stats.loads, models.stats.unparks) == (2, 1)
    with models.use(c):
        pass
    assert models.loaded == [c] and models.parked == [a]  # b was parked, then dropped for a (max_parked=1)


def test_a_model_in_use_is_never_evicted_a_load_waits_for_it(copies: list[str], tmp_path: Path) -> None:
    models = LoadedModels(cache_dir=tmp_path, device="cpu", capacity=1)
    a, b = copies[:2]
    holding, release, loaded_b = threading.Event(), threading.Event(), threading.Event()

    def job_on_a() -> None:
        with models.use(a):
            holding.set()
            release.wait(60)

    def job_on_b() -> None:
        with models.use(b):
            loaded_b.set()

    first = threading.Thread(target=job_on_a)
    first.start()
    assert holding.wait(60)
    second = threading.Thread(target=job_on_b)
    second.start()
    assert not loaded_b.wait(1.0)  # b needs a's room, and a is running a job
    assert models.loaded == [a]
    release.set()
    assert loaded_b.wait(60)
    first.join(60)
    second.join(60)
    assert models.loaded == [b]


def test_a_model_that_fails_to_load_fails_only_its_job(copies: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(copies[0], broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    models = LoadedModels(cache_dir=tmp_path / "cache", device="cpu", capacity=1)
    with models.use(copies[1]):
        pass
    for _ in range(2):  # and again: a failure leaves no half-loaded state behind that could hang the next try
        with pytest.raises(ModelLoadError, match="broken: failed to load"), models.use(str(broken)):
            pytest.fail("unreachable")
        with pytest.raises(ModelNotFoundError, match="no such model directory"), models.use(str(tmp_path / "nope")):
            pytest.fail("unreachable")
    with models.use(copies[1]) as (pipe, _):
        assert pipe is not None
    assert models.loaded == [copies[1]]  # loading the broken model evicted the good one; nothing else broke


def test_loaded_models_hold_their_cache_lease_until_unloaded(model_cache: Path, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    for name in ("a", "b"):
        shutil.copytree(model_cache / "tiny", bucket / name)
    a, b = (bucket / "a").as_uri(), (bucket / "b").as_uri()
    cache = ModelCache(tmp_path / "cache", budget_bytes=1)  # every install is over budget
    models = LoadedModels(cache=cache, device="cpu", capacity=1)
    with models.use(a):
        pass
    [entry] = cache.entries()
    assert cache.in_use(entry) and cache.enforce_budget() == []  # loaded (if idle): never evicted from disk
    with models.use(b):
        pass  # a is unloaded from memory to make room for b, so it may leave the disk too
    assert [entry.source for entry in cache.entries()] == [b]
    models.close()
    assert cache.entries() == []


def test_a_memory_budget_unloads_models_to_fit_the_next(copies: list[str], tmp_path: Path) -> None:
    models = LoadedModels(cache_dir=tmp_path, device="cpu", capacity=3)
    with models.use(copies[0]) as (pipe, _):
        size = pipeline_bytes(pipe)
    assert size > 0
    budgeted = LoadedModels(cache_dir=tmp_path, device="cpu", capacity=3, memory_budget_bytes=int(size * 2.5))
    for model in copies:
        with budgeted.use(model):
            pass
    assert budgeted.loaded == copies[1:]


def test_preload_loads_before_any_job(copies: list[str], tmp_path: Path) -> None:
    models = LoadedModels(cache_dir=tmp_path, device="cpu", capacity=2)
    seconds = models.preload([copies[0], "tiny", copies[0]])
    assert list(seconds) == [copies[0], "tiny"] and all(s > 0 for s in seconds.values())
    assert models.loaded == [copies[0], "tiny"]
    with models.use("tiny") as (_, load_s):
        assert load_s == 0.0


def test_preload_fails_loudly_on_a_model_that_is_not_there(tmp_path: Path) -> None:
    models = LoadedModels(cache_dir=tmp_path, device="cpu", capacity=1)
    with pytest.raises(ModelNotFoundError):
        models.preload([str(tmp_path / "missing")])
    wait_for(lambda: models.loaded == [], timeout_s=5)


def test_settings_configure_the_cache_and_the_loaded_set(tmp_path: Path) -> None:
    from gpu_worker.settings import WorkerSettings

    settings = WorkerSettings(
        model_cache_dir=tmp_path,
        model_cache_budget_gb=2.5,
        preload_models="tiny, org/name",
        max_loaded_models=3,
        park_on_cpu=True,
        max_parked_models=4,
        model_memory_budget_gb=10,
        lora_storage_url="s3://bucket/loras",
        vae_tiling=False,
    )
    models = LoadedModels.from_settings(settings, device="cpu")
    assert settings.preload_models == ["tiny", "org/name"]
    assert (models.cache.root, models.cache.budget_bytes, models.cache.lora_storage_url) == (
        tmp_path,
        2_500_000_000,
        "s3://bucket/loras",
    )
    assert (models.capacity, models.park_on_cpu, models.max_parked, models.memory_budget_bytes) == (
        3,
        True,
        4,
        10_000_000_000,
    )
    assert not models.options.vae_tiling and models.options.attention == "sdpa"
