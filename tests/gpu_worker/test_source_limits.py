"""What a worker copies from a source a job names: only what a load reads, within a size cap checked from the
listing before anything is copied, and errors that never tell what the prefix holds (real `file://` storage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_worker.cache import META_FILE, ModelCache
from gpu_worker.errors import ModelLoadError, ModelNotFoundError
from tests.gpu_worker.test_cache import bucket_model


def _secrets(folder: Path) -> Path:
    """A folder that is no model or LoRA: what a job pointing at `/etc` would name."""
    folder.mkdir(parents=True)
    (folder / "passwd").write_text("root:x:0:0")
    (folder / "shadow-keys.json").write_text("{}")
    (folder / "nested").mkdir()
    (folder / "nested" / "id_rsa.safetensors").write_bytes(b"k")
    return folder


def _copied(cache_root: Path) -> list[str]:
    return sorted(p.name for p in cache_root.rglob("*") if p.is_file() and not p.name.endswith((".use", ".install")))


def test_a_lora_prefix_with_no_top_level_weights_copies_nothing_and_names_no_file(tmp_path: Path) -> None:
    etc = _secrets(tmp_path / "etc")
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(ModelNotFoundError) as caught:
        cache.acquire_lora(etc.as_uri())
    message = str(caught.value)
    assert "no .safetensors weights" in message
    assert not any(name in message for name in ("passwd", "shadow", "nested", "id_rsa"))
    assert _copied(tmp_path / "cache") == []


def test_a_model_prefix_that_is_no_pipeline_copies_nothing(tmp_path: Path) -> None:
    etc = _secrets(tmp_path / "etc")
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(ModelNotFoundError, match="not a diffusers pipeline") as caught:
        cache.acquire(etc.as_uri())
    assert "passwd" not in str(caught.value) and _copied(tmp_path / "cache") == []


def test_a_lora_copies_only_its_top_level_weights_and_configs(tmp_path: Path) -> None:
    lora = _secrets(tmp_path / "lora")
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"w")
    with ModelCache(tmp_path / "cache").acquire_lora(lora.as_uri()) as lease:
        copied = {p.name for p in lease.path.iterdir()} - {META_FILE}
        assert copied == {"pytorch_lora_weights.safetensors", "shadow-keys.json"}  # no passwd, no nested/
        assert not (lease.path / "passwd").exists() and not (lease.path / "nested").exists()


def test_several_weights_files_are_refused_without_naming_them(tmp_path: Path) -> None:
    lora = tmp_path / "lora"
    lora.mkdir()
    for name in ("private-a.safetensors", "private-b.safetensors"):
        (lora / name).write_bytes(b"w")
    with pytest.raises(ModelLoadError, match="2 safetensors files") as caught:
        ModelCache(tmp_path / "cache").acquire_lora(lora.as_uri())
    assert "private" not in str(caught.value)


def test_the_size_cap_is_checked_from_the_listing_before_anything_is_copied(tmp_path: Path) -> None:
    url = bucket_model(tmp_path / "bucket", "sd", size_bytes=5000)
    with pytest.raises(ModelLoadError, match="SDQ_MAX_DOWNLOAD_GB") as caught:
        ModelCache(tmp_path / "small", max_download_bytes=4000).acquire(url)
    assert "nothing copied" in str(caught.value) and _copied(tmp_path / "small") == []
    ModelCache(tmp_path / "large", max_download_bytes=6000).acquire(url).release()
