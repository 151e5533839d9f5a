"""Model references and `load_pipeline`: every source, and every way loading can fail."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from gpu_worker.errors import ModelLoadError, ModelNotFoundError
from gpu_worker.pipelines import ModelRef, ModelSource, default_dtype, load_pipeline

# diffusers 0.42 passes a deprecated argument to huggingface_hub 2.x on every hub look-up.
hub_lookup = pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated:UserWarning")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("tiny", ModelRef(ModelSource.TINY, "tiny")),
        ("/models/sd15", ModelRef(ModelSource.LOCAL, "/models/sd15")),
        ("org/name", ModelRef(ModelSource.HUB, "org/name")),
        ("org/name@fp16-v2", ModelRef(ModelSource.HUB, "org/name", "fp16-v2")),
        ("legacy-name", ModelRef(ModelSource.HUB, "legacy-name")),
        ("s3://bucket/models/sd15", ModelRef(ModelSource.STORAGE, "s3://bucket/models/sd15")),
    ],
)
def test_parses_model_refs(model: str, expected: ModelRef) -> None:
    assert ModelRef.parse(model) == expected
    assert str(ModelRef.parse(model)) == model


@pytest.mark.parametrize("model", ["a/b/c", "org/", "org/name@"])
def test_malformed_hub_id_is_not_found(model: str) -> None:
    with pytest.raises(ModelNotFoundError, match="not a model reference"):
        ModelRef.parse(model)


def test_default_dtype() -> None:
    assert default_dtype("cpu") == torch.float32
    assert default_dtype(torch.device("cuda", 0)) == torch.float16


def test_tiny_is_built_on_first_use_and_ready_to_run(tmp_path: Path) -> None:
    pipe = load_pipeline("tiny", cache_dir=tmp_path, device="cpu")
    assert (tmp_path / "tiny" / "model_index.json").is_file()
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.device == torch.device("cpu")
    assert pipe.unet.dtype == torch.float32
    assert pipe._progress_bar_config == {"disable": True}
    assert pipe.safety_checker is None


def test_local_directory_loads(tiny_dir: Path, tmp_path: Path) -> None:
    pipe = load_pipeline(str(tiny_dir), cache_dir=tmp_path, device="cpu")
    assert pipe.vae_scale_factor == 8


def test_float16_falls_back_to_full_precision_weights_without_fp16_variant(tiny_dir: Path, tmp_path: Path) -> None:
    pipe = load_pipeline(str(tiny_dir), cache_dir=tmp_path, device="cpu", dtype=torch.float16)
    assert pipe.unet.dtype == torch.float16


def test_missing_local_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        load_pipeline(str(tmp_path / "nope"), cache_dir=tmp_path, device="cpu")


def test_directory_without_model_index_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a diffusers pipeline directory"):
        load_pipeline(str(tmp_path / "empty"), cache_dir=tmp_path, device="cpu")


@hub_lookup
@pytest.mark.parametrize("local_files_only", [True, False])
def test_unknown_hub_id_is_not_found_offline(tmp_path: Path, local_files_only: bool) -> None:
    with pytest.raises(ModelNotFoundError, match="sdqueue-tests/no-such-model: not found on the Hugging Face Hub"):
        load_pipeline(
            "sdqueue-tests/no-such-model", cache_dir=tmp_path, device="cpu", local_files_only=local_files_only
        )


@hub_lookup
def test_unknown_hub_revision_is_not_found_offline(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="sdqueue-tests/no-such-model@v9"):
        load_pipeline("sdqueue-tests/no-such-model@v9", cache_dir=tmp_path, device="cpu", local_files_only=True)


@pytest.mark.parametrize("url", ["s3://bucket/sd15", "gs://bucket/sd15", "az://container/sd15"])
def test_storage_urls_are_not_supported_yet(tmp_path: Path, url: str) -> None:
    with pytest.raises(ModelNotFoundError, match="object storage is not supported yet"):
        load_pipeline(url, cache_dir=tmp_path, device="cpu")


def _broken_copy(tiny_dir: Path, tmp_path: Path, damage: Any) -> str:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    damage(broken / "unet" / "diffusion_pytorch_model.safetensors")
    return str(broken)


def test_model_missing_its_weights_fails_to_load(tiny_dir: Path, tmp_path: Path) -> None:
    # The directory is a model (it has a model_index.json) that is broken: a load error, not "not found".
    broken = _broken_copy(tiny_dir, tmp_path, Path.unlink)
    with pytest.raises(ModelLoadError, match=r"broken: failed to load .*diffusion_pytorch_model\.safetensors"):
        load_pipeline(broken, cache_dir=tmp_path, device="cpu")


def test_model_with_corrupt_weights_fails_to_load(tiny_dir: Path, tmp_path: Path) -> None:
    broken = _broken_copy(tiny_dir, tmp_path, lambda weights: weights.write_bytes(b"not safetensors"))
    with pytest.raises(ModelLoadError, match="failed to load"):
        load_pipeline(broken, cache_dir=tmp_path, device="cpu")


def test_pickle_only_weights_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    broken = _broken_copy(
        tiny_dir, tmp_path, lambda weights: weights.rename(weights.with_name("diffusion_pytorch_model.bin"))
    )
    with pytest.raises(ModelLoadError):
        load_pipeline(broken, cache_dir=tmp_path, device="cpu")
