"""The NVMe model cache: sources, atomic installs, leases, and the LRU disk budget (in this process and others)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gpu_worker.cache import LORAS_DIR, META_FILE, MODELS_DIR, ModelCache
from gpu_worker.errors import ModelLoadError, ModelNotFoundError
from gpu_worker.refs import ModelRef
from gpu_worker.sources import select_hub_files
from storage import StorageCredentials
from tests.emulators import S3Server
from tests.support import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]

# The files of stable-diffusion-v1-5/stable-diffusion-v1-5 on the Hub (weights of every kind, samples, checkpoints).
SD15_REPO_FILES = [
    ".gitattributes",
    "README.md",
    "model_index.json",
    "v1-5-pruned.ckpt",
    "v1-5-pruned.safetensors",
    "v1-5-pruned-emaonly.safetensors",
    "v1-inference.yaml",
    "feature_extractor/preprocessor_config.json",
    "safety_checker/config.json",
    "safety_checker/model.fp16.safetensors",
    "safety_checker/model.safetensors",
    "safety_checker/pytorch_model.bin",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder/pytorch_model.bin",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
]
CONFIGS = [
    "feature_extractor/preprocessor_config.json",
    "model_index.json",
    "safety_checker/config.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "vae/config.json",
]


def fake_pipeline(root: Path, *, size_bytes: int = 1000) -> Path:
    """A folder shaped like a diffusers pipeline (never loaded: the cache only checks the layout)."""
    root.mkdir(parents=True)
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    (root / "model_index.json").write_text(json.dumps(index))
    (root / "unet").mkdir()
    (root / "unet" / "config.json").write_text("{}")
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(size_bytes))
    return root


def bucket_model(bucket: Path, name: str, *, size_bytes: int = 1000) -> str:
    """A fake pipeline under `name/` in a local store rooted at `bucket`; its `file://` model URL."""
    fake_pipeline(bucket / name, size_bytes=size_bytes)
    return (bucket / name).as_uri()


# Its model_index.json, as far as the selection reads it.
SD15_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
ANY_INDEX = {"_class_name": "Pipeline", **{c: ["diffusers", "Model"] for c in ("unet", "vae", "text_encoder")}}


def test_hub_selection_takes_one_precision_of_each_component_and_skips_checkpoints() -> None:
    fp16 = select_hub_files(SD15_REPO_FILES, index=SD15_INDEX, fp16=True)
    fp32 = select_hub_files(SD15_REPO_FILES, index=SD15_INDEX, fp16=False)
    # The safety checker is never loaded (nor its image processor): neither is fetched.
    configs = [name for name in CONFIGS if not name.startswith(("safety_checker/", "feature_extractor/"))]
    assert fp16 == sorted(
        [
            *configs,
            "text_encoder/model.fp16.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]
    )
    assert fp32 == sorted(
        [
            *configs,
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        ]
    )


def test_hub_selection_takes_only_the_folders_model_index_names() -> None:
    files = [*SD15_REPO_FILES, "vae_1_0/config.json", "vae_1_0/diffusion_pytorch_model.fp16.safetensors"]
    index = {**SD15_INDEX, "image_encoder": [None, None]}
    chosen = select_hub_files([*files, "image_encoder/config.json"], index=index, fp16=True)
    assert not [name for name in chosen if name.startswith(("vae_1_0/", "image_encoder/", "safety_checker/"))]


def test_hub_selection_falls_back_between_precisions_and_keeps_shards_together() -> None:
    files = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.bin.index.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/model.safetensors.index.json",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
        "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors",
    ]
    chosen = select_hub_files(files, index=ANY_INDEX, fp16=True)
    assert [f for f in chosen if f.startswith("text_encoder/") and f.endswith(".safetensors")] == [
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
    ]
    assert "text_encoder/model.safetensors.index.fp16.json" in chosen  # each shard index goes with its shards
    assert "text_encoder/model.safetensors.index.json" not in chosen
    assert "unet/diffusion_pytorch_model-00002-of-00002.safetensors" in chosen  # no fp16 unet: the plain shards
    assert "unet/diffusion_pytorch_model.safetensors.index.json" in chosen
    assert "unet/diffusion_pytorch_model.bin.index.json" not in chosen  # pickled weights are never loaded
    fp32 = select_hub_files(files, index=ANY_INDEX, fp16=False)
    assert "vae/diffusion_pytorch_model.fp16.safetensors" in fp32  # only fp16 there


def test_hub_models_cannot_be_fetched_offline(tmp_path: Path) -> None:
    # HF_HUB_OFFLINE=1 in these tests: the real download path, stopped by huggingface_hub itself.
    with pytest.raises(ModelNotFoundError, match="sdqueue-tests/no-such-model@v2: not found on the Hugging Face Hub"):
        ModelCache(tmp_path).acquire("sdqueue-tests/no-such-model@v2", fp16=True)
    assert not (tmp_path / MODELS_DIR).exists()  # nothing half-installed


def test_tiny_is_built_once(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    first, second = cache.acquire("tiny"), cache.acquire("tiny")
    assert first.path == second.path == tmp_path / "tiny"
    assert (first.installed, second.installed) == (True, False)
    assert (first.path / "model_index.json").is_file()


def test_local_paths_are_used_in_place(tmp_path: Path) -> None:
    model = fake_pipeline(tmp_path / "mine")
    cache = ModelCache(tmp_path / "cache", budget_bytes=1)
    with cache.acquire(str(model)) as lease:
        assert lease.path == model and not lease.installed
    assert cache.entries() == [] and model.is_dir()
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        cache.acquire(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"has no model_index\.json"):
        cache.acquire(str(tmp_path / "empty"))


def test_a_storage_prefix_is_installed_once_and_atomically(tmp_path: Path) -> None:
    url = bucket_model(tmp_path / "bucket", "models/sd", size_bytes=5000)
    cache = ModelCache(tmp_path / "cache")
    with cache.acquire(url) as first:
        assert first.installed
        assert first.path.parent == tmp_path / "cache" / MODELS_DIR
        assert (first.path / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size == 5000
    with cache.acquire(url) as second:
        assert second.path == first.path and not second.installed
    [entry] = cache.entries()
    assert entry.source == url and entry.size_bytes > 5000 and entry.kind == MODELS_DIR
    assert list((tmp_path / "cache" / ".staging").iterdir()) == []


def test_an_empty_storage_prefix_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    with pytest.raises(ModelNotFoundError, match="no objects under this storage prefix"):
        ModelCache(tmp_path / "cache").acquire((tmp_path / "bucket" / "nothing").as_uri())


def test_an_incomplete_download_is_never_installed(tmp_path: Path) -> None:
    url = bucket_model(tmp_path / "bucket", "sd")
    index = json.loads((tmp_path / "bucket" / "sd" / "model_index.json").read_text())
    index["vae"] = ["diffusers", "AutoencoderKL"]  # listed, but its folder never made it to the bucket
    (tmp_path / "bucket" / "sd" / "model_index.json").write_text(json.dumps(index))
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(ModelLoadError, match=r"missing component folder\(s\) vae"):
        cache.acquire(url)
    assert list((tmp_path / "cache" / MODELS_DIR).glob("*")) == []
    assert list((tmp_path / "cache" / ".staging").iterdir()) == []


def test_no_downloads_when_local_files_only(tmp_path: Path) -> None:
    url = bucket_model(tmp_path / "bucket", "sd")
    with pytest.raises(ModelNotFoundError, match="not in the worker's model cache, and downloads are off"):
        ModelCache(tmp_path / "cache", local_files_only=True).acquire(url)
    ModelCache(tmp_path / "cache").acquire(url).release()
    ModelCache(tmp_path / "cache", local_files_only=True).acquire(url).release()  # now it is there


def test_a_crashed_install_leaves_nothing_that_blocks_the_next(tmp_path: Path) -> None:
    url = bucket_model(tmp_path / "bucket", "sd")
    key = ModelRef.parse(url).cache_key()
    leftover = tmp_path / "cache" / ".staging" / f"{key}.abc123"
    leftover.mkdir(parents=True)
    (leftover / "half-written").write_bytes(b"x")
    with ModelCache(tmp_path / "cache").acquire(url) as lease:
        assert lease.installed
    assert not leftover.exists()


def test_the_budget_evicts_least_recently_used_models_first(tmp_path: Path) -> None:
    urls = [bucket_model(tmp_path / "bucket", f"m{i}", size_bytes=100_000) for i in range(4)]
    cache = ModelCache(tmp_path / "cache", budget_bytes=350_000)
    for url in urls[:3]:
        cache.acquire(url).release()
        time.sleep(0.01)  # distinct last-use times
    cache.acquire(urls[0]).release()  # m0 is now the most recently used; m1 the least
    cache.acquire(urls[3]).release()
    assert sorted(entry.source for entry in cache.entries()) == [urls[0], urls[2], urls[3]]


def test_a_model_in_use_is_never_evicted(tmp_path: Path) -> None:
    urls = [bucket_model(tmp_path / "bucket", f"m{i}", size_bytes=100_000) for i in range(3)]
    cache = ModelCache(tmp_path / "cache", budget_bytes=150_000)
    held = cache.acquire(urls[0])  # least recently used, but loaded
    cache.acquire(urls[1]).release()
    cache.acquire(urls[2]).release()
    assert sorted(entry.source for entry in cache.entries()) == [urls[0], urls[2]]
    assert held.path.is_dir()
    held.release()
    cache.enforce_budget()
    assert [entry.source for entry in cache.entries()] == [urls[2]]


def test_a_model_loaded_by_another_process_is_never_evicted(tmp_path: Path) -> None:
    urls = [bucket_model(tmp_path / "bucket", f"m{i}", size_bytes=100_000) for i in range(2)]
    cache = ModelCache(tmp_path / "cache", budget_bytes=150_000)
    cache.acquire(urls[0]).release()
    ready = tmp_path / "holding"
    code = (
        "import sys, time, pathlib\n"
        "from gpu_worker.cache import ModelCache\n"
        f"lease = ModelCache(pathlib.Path({str(tmp_path / 'cache')!r})).acquire({urls[0]!r})\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "sys.stdin.read()\n"  # hold the lease until the test closes our stdin
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, cwd=REPO_ROOT)
    try:
        wait_for(ready.exists, timeout_s=60)
        cache.acquire(urls[1]).release()  # over budget: m0 is older, but the other process holds it
        assert {entry.source for entry in cache.entries()} == {urls[0], urls[1]}
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert cache.enforce_budget() == [ModelRef.parse(urls[0]).cache_key()]  # its lock died with the process


def test_loras_come_from_the_cache_folder_or_the_lora_storage_prefix(tmp_path: Path) -> None:
    placed = tmp_path / "cache" / LORAS_DIR / "placed"
    placed.mkdir(parents=True)
    (placed / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    library = tmp_path / "library"
    (library / "remote").mkdir(parents=True)
    (library / "remote" / "style.safetensors").write_bytes(b"y")

    cache = ModelCache(tmp_path / "cache", lora_storage_url=library.as_uri())
    with cache.acquire_lora("placed") as lease:
        assert lease.path == placed and not lease.installed
    with cache.acquire_lora("remote") as lease:
        assert lease.installed and (lease.path / "style.safetensors").read_bytes() == b"y"
        assert (lease.path / META_FILE).is_file()
    with pytest.raises(ModelNotFoundError, match="no objects under this storage prefix"):
        cache.acquire_lora("absent")
    with pytest.raises(ModelNotFoundError, match="no LoRA storage prefix"):
        ModelCache(tmp_path / "cache").acquire_lora("absent")


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("my-style_v2.1", "named"),
        ("org/lora", "hub"),
        ("org/lora@v1", "hub"),
        ("/srv/loras/x", "local"),
        ("s3://bucket/loras/x", "storage"),
    ],
)
def test_lora_references(name: str, source: str) -> None:
    assert ModelRef.parse_lora(name).source.value == source


def test_tiny_is_not_a_lora() -> None:
    with pytest.raises(ModelNotFoundError, match="is a model, not a LoRA"):
        ModelRef.parse_lora("tiny")


def test_cache_keys_are_safe_folder_names_and_tell_sources_apart() -> None:
    a = ModelRef.parse("s3://bucket/models/sd15?endpoint_url=http://a").cache_key()
    b = ModelRef.parse("s3://bucket/models/sd15?endpoint_url=http://b").cache_key()
    assert a != b and a.startswith("storage--bucket-models-sd15--")
    assert all(c.isalnum() or c in "._-" for c in a)
    hub = ModelRef.parse("org/name@main")
    assert hub.cache_key("fp16") != hub.cache_key("fp32")


@pytest.mark.s3
def test_a_bucket_prefix_is_read_with_the_workers_explicit_storage_credentials(
    tmp_path: Path, seaweedfs_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to fall back on here
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    bucket = f"models-{os.getpid()}"
    seaweedfs_server.create_bucket(bucket)
    fake_pipeline(tmp_path / "src", size_bytes=2000)
    client: Any = seaweedfs_server.client()
    for path in (tmp_path / "src").rglob("*"):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"sd/{path.relative_to(tmp_path / 'src')}", Body=path.read_bytes())
    url = seaweedfs_server.url(bucket, "sd")

    with pytest.raises((ModelNotFoundError, ModelLoadError)):  # the SDK's chain finds no credentials
        ModelCache(tmp_path / "anonymous").acquire(url).release()
    credentials = StorageCredentials(
        aws_access_key_id=seaweedfs_server.access_key_id, aws_secret_access_key=seaweedfs_server.secret_access_key
    )
    with ModelCache(tmp_path / "cache", storage_credentials=credentials).acquire(url) as held:
        assert held.installed
        assert (held.path / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size == 2000
