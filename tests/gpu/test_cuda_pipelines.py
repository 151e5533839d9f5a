"""The worker's CUDA pipeline set-up: fp16, channels-last, VAE slicing/tiling, parking in CPU RAM, LoRAs in fp16,
and torch.compile warmed up at preload. Skipped without CUDA."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpu_worker.cache import LORAS_DIR
from gpu_worker.lora import LoraSpec
from gpu_worker.models import LoadedModels
from gpu_worker.optimize import PipelineOptions
from gpu_worker.tiny import build_tiny_lora

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def two_models(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("cuda-models")
    for name in ("a", "b"):
        shutil.copytree(model_cache / "tiny", root / name)
    return [str(root / "a"), str(root / "b")]


def _render(pipe: object, seed: int = 3) -> bytes:
    import torch

    generator = torch.Generator(device="cuda").manual_seed(seed)
    image = pipe(prompt="a fox", width=64, height=64, num_inference_steps=3, generator=generator).images[0]  # type: ignore[operator]
    return bytes(image.tobytes())


def test_pipelines_load_in_fp16_channels_last_with_vae_slicing_and_tiling(model_cache: Path) -> None:
    import torch

    models = LoadedModels(cache_dir=model_cache, device="cuda")
    with models.use("tiny") as (pipe, load_s):
        assert load_s > 0
        assert pipe.device.type == "cuda" and pipe.unet.dtype == torch.float16 and pipe.vae.dtype == torch.float16
        assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert pipe.vae.use_slicing and pipe.vae.use_tiling
        assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}  # SDPA
        assert _render(pipe) == _render(pipe)
    models.close()


def test_an_evicted_model_parks_in_cpu_ram_and_frees_the_gpu(two_models: list[str], tmp_path: Path) -> None:
    import torch

    a, b = two_models
    models = LoadedModels(cache_dir=tmp_path, device="cuda", capacity=1, park_on_cpu=True)
    with models.use(a) as (pipe_a, cold_s):
        first = _render(pipe_a)
    with models.use(b) as (pipe_b, _):
        assert pipe_a.unet.device.type == "cpu" and pipe_b.unet.device.type == "cuda"
    with models.use(a) as (again, unpark_s):
        assert again is pipe_a and again.unet.device.type == "cuda"
        assert again.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert _render(again) == first  # parking round-trips the weights exactly
    assert models.stats.unparks == 1 and 0 < unpark_s < cold_s
    models.close()


def test_loras_in_fp16_and_scale_zero_is_no_lora(model_cache: Path, tmp_path: Path) -> None:
    build_tiny_lora(tmp_path / LORAS_DIR / "warm", base=model_cache / "tiny", seed=1)
    models = LoadedModels(cache_dir=tmp_path, device="cuda")
    model = str(model_cache / "tiny")
    with models.use(model) as (pipe, _):
        plain = _render(pipe)
    with models.use(model, loras=[LoraSpec("warm", 1.0)]) as (pipe, _):
        warm = _render(pipe)
    with models.use(model, loras=[LoraSpec("warm", 0.0)]) as (pipe, _):
        off = _render(pipe)
    assert warm != plain and off == plain
    models.close()


@pytest.mark.slow
def test_compile_is_warmed_up_at_preload_not_on_a_job(model_cache: Path) -> None:
    import torch

    models = LoadedModels(cache_dir=model_cache, device="cuda", options=PipelineOptions(compile=True))
    seconds = models.preload(["tiny"])
    with models.use("tiny") as (pipe, load_s):
        assert isinstance(pipe.unet, torch._dynamo.eval_frame.OptimizedModule)
        assert load_s == 0.0 and seconds["tiny"] > 0
        assert _render(pipe) == _render(pipe)
    models.close()
