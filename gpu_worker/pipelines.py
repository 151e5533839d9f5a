"""Pipeline loading: the one place `from_pretrained` is called.

A job names its model with a string (see `gpu_worker.refs.ModelRef`); the model cache (`gpu_worker.cache`) turns
it into a local folder, and `load_from_directory` turns that folder into a ready-to-run pipeline on a device
through diffusers' `AutoPipelineForText2Image` (SD 1.x/2.x, SDXL, SD 3.x, Flux and every other text-to-image pipeline
it knows), in its family's dtype (`gpu_worker.families`: float16 or bfloat16 on CUDA, float32 elsewhere), set up as
`PipelineOptions` say. Every loading failure is translated into
`ModelNotFoundError` (nothing there: retrying on this worker will not help), `ModelLoadError` (something is there
but broken) or `OutOfMemoryError`.

Weights are only ever loaded from safetensors: a job request picks the model, and a pickled checkpoint is code.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gpu_worker.adapters import ImageAdapters, attach_adapters
from gpu_worker.cache import ModelCache
from gpu_worker.errors import ModelLoadError, OutOfMemoryError
from gpu_worker.families import run_dtype, traits_of_directory
from gpu_worker.optimize import PipelineOptions, optimize
from gpu_worker.refiner import Refiners, attach
from gpu_worker.refs import TINY_MODEL, ModelRef, ModelSource
from gpu_worker.sources import FP16_VARIANT, MODEL_INDEX, UNLOADED_COMPONENTS, first_line, weight_variant
from gpu_worker.vae import make_vae_fp16_safe

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

__all__ = [
    "TINY_MODEL",
    "ModelRef",
    "ModelSource",
    "default_dtype",
    "family_dtype",
    "load_controlnet",
    "load_from_directory",
    "load_image_encoder",
    "load_pipeline",
    "pipeline_bytes",
    "prepare_family",
]


def default_dtype(device: torch.device | str) -> torch.dtype:
    """The weights' precision fetched for `device` before a model's family is known: float16 on CUDA, float32
    elsewhere (CPU float16 is slow or missing)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def family_dtype(path: Path, device: torch.device | str) -> torch.dtype:
    """The dtype the pipeline saved in `path` runs in on `device`: its family's (see `gpu_worker.families`)."""
    return run_dtype(traits_of_directory(path), device)


def prepare_family(pipe: DiffusionPipeline, device: torch.device | str) -> None:
    """Family set-up of a loaded pipeline: on CUDA with bfloat16, SDXL's VAE runs in bfloat16 so that it is never
    upcast to float32 (see `gpu_worker.vae`)."""
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        make_vae_fp16_safe(pipe)


def load_pipeline(
    model: str,
    *,
    cache_dir: Path,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    local_files_only: bool = False,
    options: PipelineOptions | None = None,
) -> DiffusionPipeline:
    """Fetch `model` into the cache at `cache_dir` if needed and load it onto `device`, ready to run.

    A convenience for one-off loads (tests, benchmarks, scripts); the worker keeps models through `LoadedModels`,
    which also holds the cache lease while a model is loaded. `local_files_only` forbids downloads, which makes a
    model that is not cached a `ModelNotFoundError`. `dtype` defaults to `default_dtype(device)`.

    Raises `ModelNotFoundError` when nothing is there (missing path, unknown or unreachable hub repo, revision or
    file, empty storage prefix), `ModelLoadError` when something is there but does not load (missing or corrupt
    weights, bad configs), and `OutOfMemoryError` when the weights do not fit on the device.
    """
    cache = ModelCache(cache_dir, local_files_only=local_files_only)
    with cache.acquire(model, fp16=(dtype or default_dtype(device)) == torch.float16) as lease:
        pipe = load_from_directory(
            lease.path, name=model, device=device, dtype=dtype or family_dtype(lease.path, device), options=options
        )
    prepare_family(pipe, device)

    def load_refiner(refiner: str) -> tuple[Any, Any]:
        loaded = load_pipeline(
            refiner, cache_dir=cache_dir, device=device, local_files_only=local_files_only, options=options
        )
        return loaded, lambda: None

    attach(pipe, Refiners(load_refiner))
    attach_adapters(pipe, ImageAdapters(pipe, cache.acquire_adapter))
    return pipe


def load_from_directory(
    path: Path,
    *,
    name: str,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    options: PipelineOptions | None = None,
) -> DiffusionPipeline:
    """Load the diffusers pipeline saved in `path` (named `name` in messages) onto `device`, set up per `options`.

    The weights go straight from the (memory-mapped) safetensors files to `device` (diffusers' `device_map`): no
    copy of them is made in RAM first, and no `.to(device)` pass over mapped weights follows, which is diffusers'
    slow path (4-5x slower on CUDA, diffusers #12599)."""
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    pipe = _from_pretrained(name, path, dtype=dtype, device=device)
    pipe.set_progress_bar_config(disable=True)
    optimize(pipe, device, options or PipelineOptions())
    return pipe


def _from_pretrained(name: str, path: Path, *, dtype: torch.dtype, device: torch.device) -> DiffusionPipeline:
    from diffusers import AutoPipelineForText2Image

    variants = _variants(path, dtype)
    for attempt, variant in enumerate(variants, start=1):
        try:
            with _current_device(device):
                return AutoPipelineForText2Image.from_pretrained(
                    str(path),
                    **{_dtype_keyword(): dtype},
                    variant=variant,
                    use_safetensors=True,
                    local_files_only=True,  # the cache has fetched everything already
                    # diffusers accepts a device type here ("cuda": the current device, set above), not "cuda:1".
                    device_map=device.type,
                    **_unloaded_components(path),
                )
        except torch.cuda.OutOfMemoryError as exc:
            raise OutOfMemoryError(f"{name}: the model does not fit in {device} memory") from exc
        except Exception as exc:
            if attempt < len(variants) and "variant" in str(exc):
                continue  # no weights in this precision (some components lack them): load the others and cast
            raise ModelLoadError(f"{name}: failed to load ({type(exc).__name__}: {first_line(exc)})") from exc
    raise AssertionError("unreachable: the last variant's failure is raised")


def load_controlnet(path: Path, *, name: str, device: torch.device | str, dtype: torch.dtype) -> Any:
    """Load the ControlNet saved in `path` (named `name` in messages) onto `device` in `dtype`."""
    from diffusers import ControlNetModel

    return _load_module(ControlNetModel, path, name=name, device=device, dtype=dtype, what="ControlNet")


def load_image_encoder(path: Path, *, name: str, device: torch.device | str, dtype: torch.dtype) -> Any:
    """Load an IP-Adapter's CLIP image encoder saved in `path` onto `device` in `dtype`."""
    from transformers import CLIPVisionModelWithProjection

    return _load_module(
        CLIPVisionModelWithProjection, path, name=name, device=device, dtype=dtype, what="IP-Adapter image encoder"
    )


def _load_module(cls: Any, path: Path, *, name: str, device: torch.device | str, dtype: torch.dtype, what: str) -> Any:
    from diffusers.utils import is_transformers_version

    # diffusers 0.42 and transformers 4.56 each renamed `torch_dtype` to `dtype`.
    if cls.__module__.startswith("diffusers"):
        keyword = _dtype_keyword()
    else:
        keyword = "dtype" if is_transformers_version(">=", "4.56.0") else "torch_dtype"
    try:
        module = cls.from_pretrained(str(path), **{keyword: dtype}, use_safetensors=True, local_files_only=True)
        return module.to(device).eval()
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemoryError(f"{name}: the {what} does not fit in accelerator memory") from exc
    except Exception as exc:
        raise ModelLoadError(f"{name}: failed to load the {what} ({type(exc).__name__}: {first_line(exc)})") from exc


def _current_device(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """`device` as CUDA's current device for the load (`cuda:1` must not land on GPU 0); nothing elsewhere."""
    if device.type == "cuda" and device.index is not None:
        return torch.cuda.device(device.index)
    return contextlib.nullcontext()


def _unloaded_components(path: Path) -> dict[str, Any]:
    """Outputs are not filtered: SD 1.x/2.x's safety checker (and its 1 GB of weights) is never loaded, nor
    downloaded (`sources.UNLOADED_COMPONENTS`). Pipelines without one (SDXL) are not given the arguments, which
    they would only warn about."""
    try:
        index = json.loads((path / MODEL_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    overrides: dict[str, Any] = {component: None for component in UNLOADED_COMPONENTS if component in index}
    if "safety_checker" in index:
        overrides["requires_safety_checker"] = False
    return overrides


def _dtype_keyword() -> str:
    import diffusers

    # diffusers 0.42 renamed `torch_dtype` to `dtype` (the old name warns); older releases ignore `dtype`.
    major, minor = (int(part) for part in diffusers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (0, 42) else "torch_dtype"


def _variants(path: Path, dtype: torch.dtype) -> list[str | None]:
    """Weight variants to try, best first: fp16 files for float16 where the model has them, else the plain ones."""
    if not any(weight_variant(file.name) == FP16_VARIANT for file in path.glob("*/*.safetensors")):
        return [None]
    return [FP16_VARIANT, None] if dtype == torch.float16 else [None, FP16_VARIANT]


def pipeline_bytes(pipe: Any) -> int:
    """Bytes of parameters and buffers across a pipeline's torch modules (its weights' memory footprint)."""
    total = 0
    for component in getattr(pipe, "components", {}).values():
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in component.parameters())
            total += sum(t.numel() * t.element_size() for t in component.buffers())
    return total
