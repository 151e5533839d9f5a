"""The tiny inpainting pipeline, ControlNets and IP-Adapters: real files, loaded through the real paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from gpu_worker.cache import ModelCache
from gpu_worker.refs import TINY_ADAPTERS, ModelRef, ModelSource
from gpu_worker.tiny import build_tiny_pipeline, is_built
from gpu_worker.tiny_adapters import IMAGE_ENCODER_FOLDER, IP_ADAPTER_WEIGHTS


def test_tiny_inpaint_is_an_sd_inpainting_pipeline_with_a_9_channel_unet(model_cache: Path) -> None:
    path = ModelCache(model_cache).acquire("tiny-inpaint").path
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    assert json.loads((path / "unet" / "config.json").read_text())["in_channels"] == 9


@pytest.mark.parametrize("name", ["tiny-controlnet", "tiny-sdxl-controlnet"])
def test_tiny_controlnets_fit_their_unet_and_are_not_zero_initialized(model_cache: Path, name: str) -> None:
    from diffusers import ControlNetModel

    base = "tiny" if name == "tiny-controlnet" else "tiny-sdxl"
    cache = ModelCache(model_cache)
    controlnet = ControlNetModel.from_pretrained(cache.acquire_adapter(name).path, use_safetensors=True)
    unet = json.loads((cache.acquire(base).path / "unet" / "config.json").read_text())
    assert controlnet.config.cross_attention_dim == unet["cross_attention_dim"]
    assert list(controlnet.config.block_out_channels) == unet["block_out_channels"]
    assert all(block.weight.abs().sum() > 0 for block in controlnet.controlnet_down_blocks)  # a trained one's are not 0


@pytest.mark.parametrize("name", ["tiny-ip-adapter", "tiny-sdxl-ip-adapter"])
def test_tiny_ip_adapters_have_the_layout_load_ip_adapter_reads(model_cache: Path, name: str) -> None:
    path = ModelCache(model_cache).acquire_adapter(name).path
    with safe_open(str(path / IP_ADAPTER_WEIGHTS), framework="pt") as weights:
        keys = set(weights.keys())
    assert {"image_proj.proj.weight", "image_proj.norm.weight"} <= keys
    assert "ip_adapter.1.to_k_ip.weight" in keys and "ip_adapter.1.to_v_ip.weight" in keys
    assert json.loads((path / IMAGE_ENCODER_FOLDER / "config.json").read_text())["architectures"] == [
        "CLIPVisionModelWithProjection"
    ]


@pytest.mark.parametrize("name", ["tiny-ip-adapter-plus", "tiny-sdxl-ip-adapter-plus"])
def test_tiny_ip_adapter_plus_has_a_resampler_as_h94_keys_it(model_cache: Path, name: str) -> None:
    path = ModelCache(model_cache).acquire_adapter(name).path
    with safe_open(str(path / IP_ADAPTER_WEIGHTS), framework="pt") as weights:
        keys = set(weights.keys())
        tokens = weights.get_tensor("image_proj.latents").shape[1]
    assert "image_proj.proj.weight" not in keys and "image_proj.norm.weight" not in keys  # what diffusers tells by
    assert {"image_proj.proj_in.weight", "image_proj.layers.3.0.to_kv.weight", "image_proj.layers.3.1.3.weight"} <= keys
    assert tokens == 8 and "ip_adapter.1.to_k_ip.weight" in keys


def test_tiny_adapters_are_tiny_refs_built_once_and_deterministically(tmp_path: Path) -> None:
    for name in TINY_ADAPTERS:
        assert ModelRef.parse(name).source is ModelSource.TINY
    build_tiny_pipeline(tmp_path / "a", name="tiny-controlnet", seed=3)
    build_tiny_pipeline(tmp_path / "b", name="tiny-controlnet", seed=3)
    weights = "diffusion_pytorch_model.safetensors"
    assert is_built(tmp_path / "a", "tiny-controlnet") and not is_built(tmp_path / "a")
    assert (tmp_path / "a" / weights).read_bytes() == (tmp_path / "b" / weights).read_bytes()
    before = (tmp_path / "a" / weights).stat().st_mtime_ns
    build_tiny_pipeline(tmp_path / "a", name="tiny-controlnet", seed=3)
    assert (tmp_path / "a" / weights).stat().st_mtime_ns == before
