"""Model references and pipeline loading: the one place `from_pretrained` is called.

A job names its model with a string (see `producer.jobs.JobRequest.model`): `tiny`, an absolute directory on the
worker, a Hugging Face Hub id (`org/name`, optionally `@revision`), or a storage URL. `ModelRef.parse` sorts these
out and `load_pipeline` turns one into a ready-to-run pipeline on a device, translating every loading failure into
`ModelNotFoundError` (nothing there: retrying on this worker will not help) or `ModelLoadError` (something is
there but broken).

Weights are only ever loaded from safetensors: a job request picks the model, and a pickled checkpoint is code.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gpu_worker.errors import ModelLoadError, ModelNotFoundError, OutOfMemoryError
from gpu_worker.tiny import build_tiny_pipeline

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

#: The model ref of the built-in tiny test pipeline (see `gpu_worker.tiny`).
TINY_MODEL = "tiny"
_MODEL_INDEX = "model_index.json"
_FP16_VARIANT = "fp16"
# What diffusers says (it wraps Hub errors in plain OSErrors) when a hub repo, revision or file is not there.
_NOT_FOUND_PHRASES = (
    "is not a local folder and is not a valid model identifier",
    "is not a valid git identifier",
    "does not appear to have a file named",
    "couldn't connect to",
    "can't load config for",
    "cannot find the requested files",
)


class ModelSource(str, enum.Enum):
    """Where a model reference points."""

    TINY = "tiny"
    LOCAL = "local"
    HUB = "hub"
    STORAGE = "storage"


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: its source, its location there (path, repo id or URL) and a hub revision."""

    source: ModelSource
    location: str
    revision: str | None = None

    @classmethod
    def parse(cls, model: str) -> ModelRef:
        """Parse a job's `model` string. Raises `ModelNotFoundError` for a string that cannot name a model."""
        if model == TINY_MODEL:
            return cls(ModelSource.TINY, model)
        if model.startswith("/"):
            return cls(ModelSource.LOCAL, model)
        if "://" in model:
            return cls(ModelSource.STORAGE, model)
        repo_id, at, revision = model.partition("@")
        parts = repo_id.split("/")
        if len(parts) > 2 or not all(parts) or (at and not revision):
            raise ModelNotFoundError(f"{model!r} is not a model reference: expected 'org/name', 'org/name@revision'")
        return cls(ModelSource.HUB, repo_id, revision or None)

    def __str__(self) -> str:
        return f"{self.location}@{self.revision}" if self.revision else self.location


def default_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype pipelines run in on `device`: float16 on CUDA, float32 elsewhere (CPU float16 is slow or missing)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def load_pipeline(
    model: str,
    *,
    cache_dir: Path,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    local_files_only: bool = False,
) -> DiffusionPipeline:
    """Load the text-to-image pipeline `model` names onto `device`, ready to run.

    `tiny` is built into `cache_dir / "tiny"` on first use; hub models download into `cache_dir / "hub"` (never
    when `local_files_only`, which makes a model that is not cached a `ModelNotFoundError`). `dtype` defaults to
    `default_dtype(device)`; in float16 the `fp16` weight variant is preferred where a model ships one.

    Raises `ModelNotFoundError` when nothing is there (missing path, unknown or unreachable hub repo, revision or
    file, storage URL), `ModelLoadError` when something is there but does not load (for a local directory with a
    `model_index.json`, every failure is a load error: missing or corrupt weights, bad configs), and
    `OutOfMemoryError` when the weights do not fit on the device.
    """
    ref = ModelRef.parse(model)
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    options: dict[str, Any] = {}
    if ref.source is ModelSource.STORAGE:
        raise ModelNotFoundError(f"{model}: loading models from object storage is not supported yet")
    if ref.source is ModelSource.TINY:
        location = cache_dir / TINY_MODEL
        try:
            build_tiny_pipeline(location)
        except Exception as exc:
            raise ModelLoadError(f"could not build the tiny model in {location}: {exc}") from exc
        source = str(location)
    elif ref.source is ModelSource.LOCAL:
        _check_local_dir(Path(ref.location))
        source = ref.location
    else:
        source = ref.location
        options = {"revision": ref.revision, "cache_dir": cache_dir / "hub", "local_files_only": local_files_only}

    pipe = _from_pretrained(ref, source, dtype=dtype, options=options)
    _prepare(pipe, device)
    return pipe


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise ModelNotFoundError(f"{path}: no such model directory on this worker")
    if not (path / _MODEL_INDEX).is_file():
        raise ModelNotFoundError(f"{path}: not a diffusers pipeline directory (it has no {_MODEL_INDEX})")


def _from_pretrained(ref: ModelRef, source: str, *, dtype: torch.dtype, options: dict[str, Any]) -> DiffusionPipeline:
    from diffusers import AutoPipelineForText2Image

    for variant in _variants(dtype):
        try:
            return AutoPipelineForText2Image.from_pretrained(
                source,
                **{_dtype_keyword(): dtype},
                variant=variant,
                use_safetensors=True,
                # Outputs are not filtered; skip loading the checker (and its 1 GB of weights) altogether.
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
                **options,
            )
        except torch.cuda.OutOfMemoryError as exc:
            raise OutOfMemoryError(f"{ref}: the weights do not fit in accelerator memory") from exc
        except Exception as exc:
            if variant is not None and "variant" in str(exc):
                continue  # the model ships no fp16 weights: load the full-precision ones and cast them
            raise _translate(ref, exc) from exc
    raise AssertionError("unreachable: the last variant tried is always None")


def _dtype_keyword() -> str:
    import diffusers

    # diffusers 0.42 renamed `torch_dtype` to `dtype` (the old name warns); older releases ignore `dtype`.
    major, minor = (int(part) for part in diffusers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (0, 42) else "torch_dtype"


def _variants(dtype: torch.dtype) -> Iterator[str | None]:
    if dtype == torch.float16:
        yield _FP16_VARIANT
    yield None


def _translate(ref: ModelRef, exc: Exception) -> Exception:
    reason = _first_line(exc)
    if ref.source is ModelSource.HUB and _is_not_found(exc):
        return ModelNotFoundError(f"{ref}: not found on the Hugging Face Hub or in the worker's cache ({reason})")
    return ModelLoadError(f"{ref}: failed to load ({type(exc).__name__}: {reason})")


def _is_not_found(exc: BaseException) -> bool:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub_errors = (EntryNotFoundError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, hub_errors):
            return True
        if isinstance(seen, OSError) and any(phrase in str(seen).lower() for phrase in _NOT_FOUND_PHRASES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _prepare(pipe: DiffusionPipeline, device: torch.device) -> None:
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe.to(device)
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemoryError(f"the model does not fit in {device} memory") from exc
    if device.type == "cuda":
        unet = getattr(pipe, "unet", None)
        if unet is not None:
            unet.to(memory_format=torch.channels_last)  # faster convolutions on tensor cores
        vae = getattr(pipe, "vae", None)
        if vae is not None and hasattr(vae, "enable_tiling"):
            # Decodes large images tile by tile instead of failing with OOM; no effect up to the VAE's tile size.
            vae.enable_tiling()
