"""The tiny pipeline builder: a real, loadable SD pipeline, built atomically and deterministically."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from gpu_worker.tiny import build_tiny_pipeline


def test_builds_a_complete_sd_pipeline_with_safetensors(tiny_dir: Path) -> None:
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for component in ("unet", "vae", "text_encoder"):
        assert list((tiny_dir / component).glob("*.safetensors")), component
    assert not list(tiny_dir.rglob("*.bin"))
    assert not [p.name for p in tiny_dir.parent.iterdir() if p.name.startswith(".tiny")]  # no staging leftovers


def test_loads_back_with_plain_diffusers(tiny_dir: Path) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, use_safetensors=True, local_files_only=True)
    assert pipe.vae_scale_factor == 8
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.safety_checker is None


def test_tokenizer_reads_common_words_as_one_token_each(tiny_dir: Path) -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_dir / "tokenizer")
    ids = tokenizer("a photo of the city at night")["input_ids"]
    assert len(ids) == 7 + 2
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id


def test_existing_build_is_kept(tiny_dir: Path) -> None:
    weights = tiny_dir / "unet" / "diffusion_pytorch_model.safetensors"
    before = weights.stat().st_mtime_ns
    build_tiny_pipeline(tiny_dir)
    assert weights.stat().st_mtime_ns == before


def test_same_seed_same_weights_and_global_rng_untouched(tmp_path: Path) -> None:
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    build_tiny_pipeline(tmp_path / "a", seed=3)
    assert torch.equal(torch.rand(1), expected_next)
    build_tiny_pipeline(tmp_path / "b", seed=3)
    build_tiny_pipeline(tmp_path / "c", seed=4)
    unet = Path("unet/diffusion_pytorch_model.safetensors")
    assert (tmp_path / "a" / unet).read_bytes() == (tmp_path / "b" / unet).read_bytes()
    assert (tmp_path / "a" / unet).read_bytes() != (tmp_path / "c" / unet).read_bytes()


def test_incomplete_directory_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "tiny"
    (target / "unet").mkdir(parents=True)  # e.g. an interrupted copy: no model_index.json
    build_tiny_pipeline(target)
    assert (target / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_concurrent_builders_leave_one_complete_model(tmp_path: Path) -> None:
    target = tmp_path / "tiny"
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: build_tiny_pipeline(target), range(2)))
    assert (target / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
