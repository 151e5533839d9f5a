"""Model and LoRA references: what a job's `model` (or a LoRA's `name`) string points at.

A reference is `tiny` (the built-in test pipeline, SD 1.x; `tiny-inpaint` is its inpainting variant, and
`tiny-sdxl`, `tiny-sdxl-refiner`, `tiny-sd3` and `tiny-flux` are the other families' tiny pipelines; `TINY_ADAPTERS`
are their tiny ControlNets and IP-Adapters), an absolute directory on the worker, a Hugging Face Hub id
(`org/name`, optionally `@revision`), or a storage URL (`s3://`, `gs://`, `az://`, `file://`). LoRAs may also be a
bare name (`my-style`), which the cache looks up under `<cache>/loras/<name>` (or pulls from the worker's LoRA
storage prefix). A LoRA, ControlNet or IP-Adapter on the Hub may name a file or folder inside its repository,
`org/name[@revision]/path`, as repositories that hold several do (`h94/IP-Adapter/models/ip-adapter_sd15.safetensors`):
only that (and, beside a file, its `image_encoder/` folder) is fetched.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass

from gpu_worker.errors import ModelNotFoundError

#: The model ref of the built-in tiny test pipeline (see `gpu_worker.tiny`).
TINY_MODEL = "tiny"
#: Every built-in tiny pipeline, one per model family (see `gpu_worker.tiny` and `gpu_worker.tiny_families`).
TINY_MODELS = (TINY_MODEL, "tiny-sdxl", "tiny-sdxl-refiner", "tiny-sd3", "tiny-flux", "tiny-inpaint")
#: The built-in tiny ControlNets and IP-Adapters, for `tiny` and `tiny-sdxl` (see `gpu_worker.tiny_adapters`).
TINY_ADAPTERS = (
    "tiny-controlnet",
    "tiny-ip-adapter",
    "tiny-ip-adapter-plus",
    "tiny-sdxl-controlnet",
    "tiny-sdxl-ip-adapter",
    "tiny-sdxl-ip-adapter-plus",
)
_BARE_NAME = re.compile(r"[A-Za-z0-9][\w.\-]{0,127}")  # fullmatch, not `$`
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ModelSource(str, enum.Enum):
    """Where a model reference points."""

    TINY = "tiny"
    LOCAL = "local"
    HUB = "hub"
    STORAGE = "storage"
    NAMED = "named"  # a bare LoRA name, resolved through the cache's `loras/` folder


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: its source, its location there (path, repo id or URL) and a hub revision."""

    source: ModelSource
    location: str
    revision: str | None = None
    subpath: str | None = None  #: a file or folder inside a Hub repository (LoRAs and adapters only)

    @classmethod
    def parse(cls, model: str, *, subpaths: bool = False) -> ModelRef:
        """Parse a job's `model` string (with `subpaths`, a LoRA's or adapter's, which may name a path inside a Hub
        repository). Raises `ModelNotFoundError` for a string that cannot name a model."""
        if model in TINY_MODELS or model in TINY_ADAPTERS:
            return cls(ModelSource.TINY, model)
        if model.startswith("/"):
            return cls(ModelSource.LOCAL, model)
        if "://" in model:
            return cls(ModelSource.STORAGE, model)
        parts = model.split("/")
        repo, inside = "/".join(parts[:2]), parts[2:]  # the '@revision' ends the repository id
        repo_id, at, revision = repo.partition("@")
        if (
            not all(parts)
            or (at and (not revision or "/" in revision))
            or (inside and not subpaths)
            or any(p in (".", "..") for p in inside)
        ):
            shapes = "'org/name', 'org/name@revision'" + (" or 'org/name[@revision]/path'" if subpaths else "")
            raise ModelNotFoundError(f"{model!r} is not a model reference: expected {shapes}")
        return cls(ModelSource.HUB, repo_id, revision or None, "/".join(inside) or None)

    @classmethod
    def parse_lora(cls, name: str) -> ModelRef:
        """Parse a LoRA reference: like a model reference, except that a bare name is a name in the cache."""
        if _BARE_NAME.fullmatch(name) and name not in TINY_MODELS + TINY_ADAPTERS and "@" not in name:
            return cls(ModelSource.NAMED, name)
        ref = cls.parse(name, subpaths=True)
        if ref.source is ModelSource.TINY:
            raise ModelNotFoundError(f"{name!r} is a model, not a LoRA")
        return ref

    def cache_key(self, *suffixes: str) -> str:
        """A directory name for this reference in the cache: readable, and unique through a hash of the whole ref."""
        if self.source is ModelSource.NAMED:
            return self.location
        text = str(self)
        readable = _UNSAFE.sub("-", text.split("://", 1)[-1].split("?", 1)[0]).strip("-.")[:80]
        digest = hashlib.sha256("\0".join((self.source.value, text, *suffixes)).encode()).hexdigest()[:12]
        return "--".join((self.source.value, readable, *suffixes, digest))

    def __str__(self) -> str:
        text = f"{self.location}@{self.revision}" if self.revision else self.location
        return f"{text}/{self.subpath}" if self.subpath else text
