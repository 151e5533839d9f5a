"""LoRA selection on the real tiny pipeline, with tiny LoRAs made by PEFT (`gpu_worker.tiny.build_tiny_lora`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gpu_worker.cache import LORAS_DIR, ModelCache
from gpu_worker.errors import ModelNotFoundError
from gpu_worker.lora import LoraSpec
from gpu_worker.models import LoadedModels
from gpu_worker.tiny import build_tiny_lora
from producer.jobs import JobRequest


@pytest.fixture(scope="module")
def lora_cache(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache with two LoRAs for the tiny model, `warm` and `cool`, in `loras/`."""
    root = tmp_path_factory.mktemp("lora-cache")
    build_tiny_lora(root / LORAS_DIR / "warm", base=tiny_dir, seed=1)
    build_tiny_lora(root / LORAS_DIR / "cool", base=tiny_dir, seed=2)
    return root


@pytest.fixture
def models(lora_cache: Path) -> LoadedModels:
    return LoadedModels(cache_dir=lora_cache, device="cpu", capacity=1)


def render(models: LoadedModels, model: str, loras: Sequence[Any] = ()) -> tuple[np.ndarray, float]:
    with models.use(model, loras=loras) as (pipe, load_s):
        generator = torch.Generator().manual_seed(7)
        image = pipe(prompt="a red fox", width=64, height=64, num_inference_steps=3, generator=generator).images[0]
    return np.asarray(image, dtype=np.int16), load_s


def test_a_lora_changes_the_image_and_scale_zero_is_no_lora(models: LoadedModels, tiny_dir: Path) -> None:
    model = str(tiny_dir)
    plain, _ = render(models, model)
    warm, warm_load_s = render(models, model, [LoraSpec("warm", 1.0)])
    half, half_load_s = render(models, model, [LoraSpec("warm", 0.5)])
    off, _ = render(models, model, [LoraSpec("warm", 0.0)])
    assert np.abs(warm - plain).mean() > 0.5
    assert 0 < np.abs(half - plain).mean() < np.abs(warm - plain).mean()
    assert np.array_equal(off, plain)
    assert warm_load_s > 0 and half_load_s == 0.0  # loaded once, then only re-weighted


def test_switching_lora_sets_between_jobs_leaves_nothing_behind(models: LoadedModels, tiny_dir: Path) -> None:
    model = str(tiny_dir)
    plain, _ = render(models, model)
    warm, _ = render(models, model, [LoraSpec("warm")])
    both, _ = render(models, model, [LoraSpec("warm"), LoraSpec("cool")])
    cool, _ = render(models, model, [LoraSpec("cool")])
    assert not np.array_equal(both, warm) and not np.array_equal(both, cool) and not np.array_equal(warm, cool)
    assert np.array_equal(render(models, model)[0], plain)  # a job without LoRAs after jobs with them
    assert np.array_equal(render(models, model, [LoraSpec("warm")])[0], warm)
    assert np.array_equal(render(models, model, [LoraSpec("cool")])[0], cool)


def test_a_job_request_names_its_loras(models: LoadedModels, tiny_dir: Path) -> None:
    request = JobRequest(prompt="a fox", loras=[{"name": "warm", "scale": 1.0}])
    by_request, _ = render(models, str(tiny_dir), request.loras)
    by_spec, _ = render(models, str(tiny_dir), [LoraSpec("warm", 1.0)])
    assert np.array_equal(by_request, by_spec)


def test_an_unknown_lora_fails_its_job_and_the_pipeline_stays_usable(models: LoadedModels, tiny_dir: Path) -> None:
    model = str(tiny_dir)
    warm, _ = render(models, model, [LoraSpec("warm")])
    with pytest.raises(ModelNotFoundError, match="LoRA missing: not in the model cache"):
        render(models, model, [LoraSpec("warm"), LoraSpec("missing")])
    assert np.array_equal(render(models, model, [LoraSpec("warm")])[0], warm)


def test_only_so_many_adapters_stay_loaded(lora_cache: Path, tiny_dir: Path) -> None:
    models = LoadedModels(cache_dir=lora_cache, device="cpu", capacity=1, max_loaded_loras=1)
    model = str(tiny_dir)
    render(models, model, [LoraSpec("warm")])
    cool, _ = render(models, model, [LoraSpec("cool")])
    with models.use(model) as (pipe, _):
        adapters = {name for names in pipe.get_list_adapters().values() for name in names}
    assert len(adapters) == 1
    assert np.array_equal(render(models, model, [LoraSpec("cool")])[0], cool)


def test_named_loras_are_pulled_from_the_lora_storage_prefix(lora_cache: Path, tiny_dir: Path, tmp_path: Path) -> None:
    library = tmp_path / "library"
    build_tiny_lora(library / "warm", base=tiny_dir, seed=1)  # the same LoRA as the cache's `warm`
    cache = ModelCache(tmp_path / "cache", lora_storage_url=library.as_uri())
    models = LoadedModels(cache=cache, device="cpu", capacity=1)
    pulled, load_s = render(models, str(tiny_dir), [LoraSpec("warm")])
    assert (tmp_path / "cache" / LORAS_DIR / "warm" / "pytorch_lora_weights.safetensors").is_file()
    reference, _ = render(LoadedModels(cache_dir=lora_cache, device="cpu"), str(tiny_dir), [LoraSpec("warm")])
    assert np.array_equal(pulled, reference) and load_s > 0


@pytest.mark.parametrize(
    ("loras", "location", "message"),
    [
        ([{"name": "a b"}], ("loras", 0, "name"), "must be a LoRA name"),
        ([{"name": "x", "scale": 4.5}], ("loras", 0, "scale"), "less than or equal to 4"),
        ([{"name": "x"}, {"name": "x"}], ("loras",), "each LoRA at most once"),
        ([{"name": f"l{i}"} for i in range(5)], ("loras",), "at most 4 items"),
        ([{"name": "x", "weight": 1}], ("loras", 0, "weight"), "Extra inputs are not permitted"),
    ],
)
def test_the_producer_rejects_bad_lora_lists_naming_the_field(
    loras: list[dict[str, Any]], location: tuple[Any, ...], message: str
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        JobRequest(prompt="a fox", loras=loras)
    [error] = caught.value.errors()
    assert error["loc"] == location and message in error["msg"]
