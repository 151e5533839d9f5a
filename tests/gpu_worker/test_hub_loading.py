"""Hub downloads against a Hub-shaped HTTP server (`tests.hub`): what a load fetches, file by file and byte by byte.

The repository is laid out like stable-diffusion-v1-5 on the Hub: the tiny model's components in fp32 and fp16,
a safety checker, an image processor, a folder `model_index.json` does not name (like SDXL's `vae_1_0/`), pickled
and EMA weights and a single-file checkpoint. The download runs in a real subprocess: huggingface_hub reads
`HF_ENDPOINT` and `HF_HUB_OFFLINE` once, at import, and these tests' own process is offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file

from gpu_worker.cache import META_FILE
from gpu_worker.sources import weights_bytes
from tests.hub import HubServer

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
}
# What a load reads, besides the weights: every config and tokenizer file of a loaded component.
LOADED_CONFIGS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "unet/config.json",
    "vae/config.json",
]


def hub_shaped_repo(tiny_dir: Path, root: Path) -> Path:
    """The tiny model laid out as SD 1.5 is on the Hub (see the module doc)."""
    shutil.copytree(tiny_dir, root)
    for component, stem in WEIGHTS.items():
        plain = root / component / f"{stem}.safetensors"
        half = {key: tensor.half() for key, tensor in load_file(plain).items()}
        save_file(half, root / component / f"{stem}.fp16.safetensors", metadata={"format": "pt"})
        pickled = "pytorch_model.bin" if stem == "model" else f"{stem}.bin"
        (root / component / pickled).write_bytes(os.urandom(3000))  # pickled weights: never fetched
    shutil.copy(
        root / "unet" / "diffusion_pytorch_model.safetensors",
        root / "unet" / "diffusion_pytorch_model.non_ema.safetensors",
    )
    (root / "safety_checker").mkdir()
    (root / "safety_checker" / "config.json").write_text("{}")
    for name in ("model.safetensors", "model.fp16.safetensors"):
        (root / "safety_checker" / name).write_bytes(os.urandom(50_000))
    (root / "feature_extractor").mkdir()
    (root / "feature_extractor" / "preprocessor_config.json").write_text("{}")
    shutil.copytree(root / "vae", root / "vae_1_0")  # a folder model_index.json does not name
    (root / "v1-5-pruned-emaonly.safetensors").write_bytes(os.urandom(40_000))
    (root / "README.md").write_text("# sd15-shaped\n")
    index = json.loads((root / "model_index.json").read_text())
    index |= {
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
    }
    (root / "model_index.json").write_text(json.dumps(index))
    return root


_SCRIPT = """
import json, sys, torch
from pathlib import Path
from gpu_worker.cache import ModelCache
from gpu_worker.errors import ModelNotFoundError
from gpu_worker.pipelines import load_from_directory

cache = ModelCache(Path(sys.argv[1]))
for model in ("sdq-tests/not-a-pipeline", "sdq-tests/no-such-repo"):
    try:
        cache.acquire(model, fp16=True)
    except ModelNotFoundError as exc:
        print(json.dumps({"model": model, "error": str(exc)}))
for precision in ("fp16", "fp32"):
    fp16 = precision == "fp16"
    with cache.acquire(f"sdq-tests/sd15-{precision}", fp16=fp16) as lease:
        pipe = load_from_directory(lease.path, name="sd15", device="cpu", dtype=torch.float16 if fp16 else None)
        dtypes = {name: str(pipe.components[name].dtype) for name in ("unet", "vae", "text_encoder")}
        line = {"model": precision, "path": str(lease.path), "dtypes": dtypes, "checker": pipe.safety_checker}
        print(json.dumps(line))
from gpu_worker.ip_adapter import IpAdapters
for adapter in ("sdq-tests/ip-adapters/models/ip-adapter_tiny.safetensors", "sdq-tests/controlnet"):
    with cache.acquire_adapter(adapter) as lease:
        files = sorted(p.relative_to(lease.path).as_posix() for p in lease.path.rglob("*") if p.is_file())
    print(json.dumps({"model": adapter, "files": files}))
from gpu_worker.errors import ModelLoadError
for lora in ("sdq-tests/lora-with-checkpoints", "sdq-tests/lora-one-file", "sdq-tests/two-loras"):
    try:
        with cache.acquire_lora(lora) as lease:
            files = sorted(p.relative_to(lease.path).as_posix() for p in lease.path.rglob("*") if p.is_file())
        print(json.dumps({"model": lora, "files": files}))
    except ModelLoadError as exc:
        print(json.dumps({"model": lora, "error": str(exc)}))
adapters = IpAdapters(pipe, cache.acquire_adapter)  # the real loader, on what the hub install left
adapters.use("sdq-tests/ip-adapters/models/ip-adapter_tiny.safetensors", 0.5)
print(json.dumps({"model": "ip-adapter-loaded", "loaded": adapters.loaded, "active": adapters.active}))
"""


def hub_shaped_adapters(root: Path) -> dict[str, Path]:
    """An IP-Adapter repository laid out as h94/IP-Adapter is (several adapters, each folder with its image
    encoder) and a ControlNet one as lllyasviel's are (fp32 and fp16 safetensors, pickled weights)."""
    from gpu_worker.tiny_adapters import IMAGE_ENCODER_FOLDER, IP_ADAPTER_WEIGHTS, build_controlnet, build_ip_adapter

    built = root / "built-ip-adapter"
    build_ip_adapter(built, "sd")
    ipa = root / "ip-adapters"
    (ipa / "models").mkdir(parents=True)
    shutil.copy(built / IP_ADAPTER_WEIGHTS, ipa / "models" / "ip-adapter_tiny.safetensors")
    shutil.copytree(built / IMAGE_ENCODER_FOLDER, ipa / "models" / "image_encoder")
    (ipa / "models" / "image_encoder" / "pytorch_model.bin").write_bytes(os.urandom(2000))
    (ipa / "models" / "ip-adapter-plus_tiny.safetensors").write_bytes(os.urandom(30_000))
    (ipa / "sdxl_models" / "image_encoder").mkdir(parents=True)
    (ipa / "sdxl_models" / "ip-adapter_sdxl.safetensors").write_bytes(os.urandom(30_000))
    (ipa / "sdxl_models" / "image_encoder" / "model.safetensors").write_bytes(os.urandom(30_000))
    (ipa / "sdxl_models" / "image_encoder" / "config.json").write_text("{}")
    (ipa / "README.md").write_text("# h94-shaped\n")
    controlnet = root / "controlnet"
    build_controlnet(controlnet, "sd")
    plain = controlnet / "diffusion_pytorch_model.safetensors"
    half = {key: tensor.half() for key, tensor in load_file(plain).items()}
    save_file(half, controlnet / "diffusion_pytorch_model.fp16.safetensors", metadata={"format": "pt"})
    (controlnet / "diffusion_pytorch_model.bin").write_bytes(os.urandom(3000))
    return {"sdq-tests/ip-adapters": ipa, "sdq-tests/controlnet": controlnet}


def hub_shaped_loras(root: Path) -> dict[str, Path]:
    """LoRA repositories as trainers push them: the weights diffusers reads beside the run's checkpoints and
    samples; one with a single weights file of its own name; one with two LoRAs and no default."""
    trained = root / "lora-with-checkpoints"
    for folder in ("", "checkpoint-500", "checkpoint-1000"):
        (trained / folder).mkdir(parents=True, exist_ok=True)
        (trained / folder / "pytorch_lora_weights.safetensors").write_bytes(os.urandom(2000))
    (trained / "checkpoint-1000" / "optimizer.safetensors").write_bytes(os.urandom(4000))
    (trained / "image_0.png").write_bytes(os.urandom(500))
    (trained / "README.md").write_text("# a trained LoRA\n")
    single = root / "lora-one-file"
    single.mkdir()
    (single / "pixel-art-xl.safetensors").write_bytes(os.urandom(2000))
    (single / "adapter_config.json").write_text("{}")
    two = root / "two-loras"
    two.mkdir()
    for name in ("style-a.safetensors", "style-b.safetensors"):
        (two / name).write_bytes(os.urandom(2000))
    return {"sdq-tests/lora-with-checkpoints": trained, "sdq-tests/lora-one-file": single, "sdq-tests/two-loras": two}


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> tuple[HubServer, Path, dict[str, Any]]:
    """One subprocess that installs the repo in fp16 and fp32 (two repo ids, one folder) and loads each, and asks
    for two repositories that are not pipelines: the server, the repo, and what the subprocess printed per model."""
    tmp = tmp_path_factory.mktemp("hub")
    repo = hub_shaped_repo(tiny_dir, tmp / "sd15-shaped")
    lora_like = tmp / "lora"
    lora_like.mkdir()
    (lora_like / "pytorch_lora_weights.safetensors").write_bytes(os.urandom(100))
    repos = {"sdq-tests/sd15-fp16": repo, "sdq-tests/sd15-fp32": repo, "sdq-tests/not-a-pipeline": lora_like}
    repos |= hub_shaped_adapters(tmp) | hub_shaped_loras(tmp)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp / "hf-home"),  # no token, no cache of the user's
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("HF_TOKEN", None)
    with HubServer(repos) as hub:
        env["HF_ENDPOINT"] = hub.url
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(tmp / "cache")], env=env, capture_output=True, text=True, timeout=280
        )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return hub, repo, {line["model"]: line for line in lines}


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_a_hub_load_fetches_only_what_diffusers_loads_in_one_precision(
    hub_run: tuple[HubServer, Path, dict[str, Any]], precision: str
) -> None:
    hub, repo, printed = hub_run
    suffix = ".fp16.safetensors" if precision == "fp16" else ".safetensors"
    expected = sorted([*LOADED_CONFIGS, *(f"{c}/{stem}{suffix}" for c, stem in WEIGHTS.items())])
    fetched = hub.downloads(f"sdq-tests/sd15-{precision}")
    assert sorted(fetched) == expected
    assert fetched == {name: (repo / name).stat().st_size for name in expected}  # each file once, whole
    assert hub.served_bytes(f"sdq-tests/sd15-{precision}") == sum(fetched.values())  # no byte of anything else
    loaded = printed[precision]
    installed = Path(loaded["path"])
    on_disk = sorted(p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.is_file())
    assert on_disk == sorted([*expected, META_FILE])
    dtype = "torch.float16" if precision == "fp16" else "torch.float32"
    assert loaded["dtypes"] == {"unet": dtype, "vae": dtype, "text_encoder": dtype} and loaded["checker"] is None
    weights = sum(size for name, size in fetched.items() if name.endswith(".safetensors"))
    assert weights_bytes(installed, fp16=precision == "fp16") == weights


def test_the_memory_estimate_of_a_full_repository_counts_only_the_weights_a_load_reads(
    hub_run: tuple[HubServer, Path, dict[str, Any]],
) -> None:
    repo = hub_run[1]
    fp16 = sum((repo / c / f"{stem}.fp16.safetensors").stat().st_size for c, stem in WEIGHTS.items())
    fp32 = sum((repo / c / f"{stem}.safetensors").stat().st_size for c, stem in WEIGHTS.items())
    assert weights_bytes(repo, fp16=True) == fp16  # not the safety checker, vae_1_0/ or the EMA weights
    assert weights_bytes(repo, fp16=False) == fp32


def test_a_hub_repo_that_is_not_a_pipeline_or_not_there_is_not_found(
    hub_run: tuple[HubServer, Path, dict[str, Any]],
) -> None:
    hub, _, printed = hub_run
    assert not hub.downloads("sdq-tests/not-a-pipeline")
    assert "not a diffusers pipeline" in printed["sdq-tests/not-a-pipeline"]["error"]
    assert "sdq-tests/no-such-repo: not found on the Hugging Face Hub" in printed["sdq-tests/no-such-repo"]["error"]


def test_an_adapter_named_inside_a_hub_repository_fetches_only_its_file_and_image_encoder_and_loads(
    hub_run: tuple[HubServer, Path, dict[str, Any]],
) -> None:
    hub, _, printed = hub_run
    ipa = "sdq-tests/ip-adapters/models/ip-adapter_tiny.safetensors"
    wanted = ["models/image_encoder/config.json", "models/image_encoder/model.safetensors"]
    assert sorted(hub.downloads("sdq-tests/ip-adapters")) == sorted(["models/ip-adapter_tiny.safetensors", *wanted])
    # Rooted at the file's folder, as the IP-Adapter loader reads it: one weights file beside `image_encoder/`.
    expected = ["image_encoder/config.json", "image_encoder/model.safetensors", "ip-adapter_tiny.safetensors"]
    assert printed[ipa]["files"] == sorted([*expected, META_FILE])
    assert printed["ip-adapter-loaded"] == {"model": "ip-adapter-loaded", "loaded": [ipa], "active": ipa}


def test_a_hub_controlnet_fetches_one_precision_of_its_weights(hub_run: tuple[HubServer, Path, dict[str, Any]]) -> None:
    hub, _, printed = hub_run
    fetched = ["config.json", "diffusion_pytorch_model.safetensors"]  # not the fp16 copy, not the pickle
    assert sorted(hub.downloads("sdq-tests/controlnet")) == fetched
    assert printed["sdq-tests/controlnet"]["files"] == sorted([*fetched, META_FILE])


def test_a_hub_lora_named_by_its_repository_fetches_only_the_file_the_loader_reads(
    hub_run: tuple[HubServer, Path, dict[str, Any]],
) -> None:
    hub, _, printed = hub_run
    # Not the training checkpoints, the optimizer state or the samples beside it.
    assert sorted(hub.downloads("sdq-tests/lora-with-checkpoints")) == ["pytorch_lora_weights.safetensors"]
    assert printed["sdq-tests/lora-with-checkpoints"]["files"] == sorted(
        [META_FILE, "pytorch_lora_weights.safetensors"]
    )
    assert sorted(hub.downloads("sdq-tests/lora-one-file")) == ["adapter_config.json", "pixel-art-xl.safetensors"]
    # Two LoRAs and no default: which one is the job's to say, and nothing is copied meanwhile.
    assert not hub.downloads("sdq-tests/two-loras")
    error = printed["sdq-tests/two-loras"]["error"]
    assert error.startswith("LoRA sdq-tests/two-loras: 2 safetensors files") and "org/name/file.safetensors" in error
