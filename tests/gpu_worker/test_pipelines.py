"""Model references and `load_pipeline`: every source, and every way loading can fail."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from gpu_worker.errors import ModelLoadError, ModelNotFoundError
from gpu_worker.optimize import PipelineOptions
from gpu_worker.pipelines import ModelRef, ModelSource, default_dtype, load_pipeline


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
    with pytest.raises(ModelNotFoundError, match="not a diffusers pipeline"):
        load_pipeline(str(tmp_path / "empty"), cache_dir=tmp_path, device="cpu")


@pytest.mark.parametrize(
    ("local_files_only", "reason"),
    [(True, "not in the worker's model cache, and downloads are off"), (False, "not found on the Hugging Face Hub")],
)
def test_unknown_hub_id_is_not_found_offline(tmp_path: Path, local_files_only: bool, reason: str) -> None:
    with pytest.raises(ModelNotFoundError, match=f"sdqueue-tests/no-such-model: {reason}"):
        load_pipeline(
            "sdqueue-tests/no-such-model", cache_dir=tmp_path, device="cpu", local_files_only=local_files_only
        )


def test_unknown_hub_revision_is_not_found_offline(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="sdqueue-tests/no-such-model@v9: not found on the Hugging Face Hub"):
        load_pipeline("sdqueue-tests/no-such-model@v9", cache_dir=tmp_path, device="cpu")


def test_a_model_in_a_storage_prefix_is_fetched_into_the_cache_and_loads(tiny_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_dir, tmp_path / "bucket" / "models" / "tiny-copy")
    url = (tmp_path / "bucket" / "models" / "tiny-copy").as_uri()
    pipe = load_pipeline(url, cache_dir=tmp_path / "cache", device="cpu")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    [installed] = (tmp_path / "cache" / "models").iterdir()
    assert (installed / "unet" / "diffusion_pytorch_model.safetensors").is_file()


@pytest.mark.parametrize("scheme", ["ftp", "ipfs"])
def test_storage_urls_this_worker_cannot_read_are_not_found(tmp_path: Path, scheme: str) -> None:
    with pytest.raises(ModelNotFoundError, match=f"{scheme}://bucket/sd15"):
        load_pipeline(f"{scheme}://bucket/sd15", cache_dir=tmp_path, device="cpu")


def test_vae_slicing_and_tiling_are_on_by_default_and_can_be_turned_off(tiny_dir: Path, tmp_path: Path) -> None:
    pipe = load_pipeline(str(tiny_dir), cache_dir=tmp_path, device="cpu")
    assert pipe.vae.use_slicing and pipe.vae.use_tiling
    plain = load_pipeline(
        str(tiny_dir), cache_dir=tmp_path, device="cpu", options=PipelineOptions(vae_slicing=False, vae_tiling=False)
    )
    assert not plain.vae.use_slicing and not plain.vae.use_tiling


def test_xformers_falls_back_to_sdpa_when_not_installed(
    tiny_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("torch")
    if importlib.util.find_spec("xformers") is not None:
        pytest.skip("xformers is installed here; the fallback is for machines without it")
    pipe = load_pipeline(str(tiny_dir), cache_dir=tmp_path, device="cpu", options=PipelineOptions(attention="xformers"))
    assert "xformers is not installed" in caplog.text
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}  # PyTorch SDPA


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


def _tiny_sdxl(tiny_dir: Path, path: Path) -> None:
    """A tiny SDXL pipeline (two text encoders, text-time conditioning) with seeded random weights."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_dir / "tokenizer")
    with torch.random.fork_rng(devices=[]):  # seeded weights, without reseeding the session's RNG
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + the pooled text embedding (32)
            cross_attention_dim=64,  # both text encoders' hidden states, concatenated
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            block_out_channels=[8, 16],
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            sample_size=64,
            norm_num_groups=8,
        )
        config = CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            projection_dim=32,
        )
        scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1)
        StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(config),
            text_encoder_2=CLIPTextModelWithProjection(config),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        ).save_pretrained(path, safe_serialization=True)


def test_sdxl_pipelines_load_through_the_same_path(tiny_dir: Path, tmp_path: Path) -> None:
    _tiny_sdxl(tiny_dir, tmp_path / "sdxl")
    pipe = load_pipeline(str(tmp_path / "sdxl"), cache_dir=tmp_path / "cache", device="cpu")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and pipe.vae.use_slicing
    image = pipe(prompt="a cat", width=64, height=64, num_inference_steps=2).images[0]
    assert image.size == (64, 64)
