"""Model families on the worker: which family a loaded pipeline is, the dtype it runs in, and its requests' check.

The rules of each family (schedulers, negative prompt, guidance, refiner, side multiple, prompt tokens) live on the
light side, `producer.families`, which the API applies at submission to a catalog model; this module adds what only
the worker knows: the dtype on CUDA (float16 for the UNet families, bfloat16 for the flow-matching transformers,
which overflow in float16) and the family of the pipeline diffusers actually loaded, read from its class
(`model_index.json`'s `_class_name`), never guessed from the model's name. Everything runs in float32 off CUDA. A
request the family cannot serve fails on the worker with `InvalidInputError`, naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from producer.families import FAMILY_RULES, FamilyRules, family_problems
from producer.jobs import Family, JobRequest

from .errors import InvalidInputError

#: Key of a rendered image's `PIL.Image.info` entries that name the family and dtype that rendered it.
FAMILY_INFO = "sdqueue_family"
DTYPE_INFO = "sdqueue_dtype"


@dataclass(frozen=True)
class FamilyTraits:
    """How a family runs on the worker: its rules (`producer.families`) and its dtype on CUDA."""

    rules: FamilyRules
    cuda_dtype: torch.dtype

    @property
    def family(self) -> Family:
        return self.rules.family

    @property
    def negative_prompt(self) -> bool:
        return self.rules.negative_prompt

    @property
    def guidance(self) -> bool:
        return self.rules.guidance


_CUDA_DTYPES = {Family.SD3: torch.bfloat16, Family.FLUX: torch.bfloat16}
_TRAITS = {
    family: FamilyTraits(rules, _CUDA_DTYPES.get(family, torch.float16)) for family, rules in FAMILY_RULES.items()
}
# Pipeline class name prefixes, most specific first (every SD 3 and SDXL class starts with "StableDiffusion").
_PREFIXES = (
    ("StableDiffusionXL", Family.SDXL),
    ("StableDiffusion3", Family.SD3),
    ("Flux", Family.FLUX),
    ("StableDiffusion", Family.SD),
)


def family_of_class(class_name: str) -> Family:
    """The family of a diffusers pipeline class (`StableDiffusionXLPipeline` → SDXL)."""
    return next((family for prefix, family in _PREFIXES if class_name.startswith(prefix)), Family.OTHER)


def traits_of(pipe: Any) -> FamilyTraits:
    """The traits of a loaded pipeline; a Flux model without guidance embedding (schnell) ignores the scale."""
    traits = _TRAITS[family_of_class(type(pipe).__name__)]
    if traits.family is Family.FLUX and not getattr(pipe.transformer.config, "guidance_embeds", True):
        return replace(traits, rules=replace(traits.rules, guidance=False))
    return traits


def traits_of_directory(path: Path) -> FamilyTraits:
    """The traits of the pipeline saved in `path`, from its `model_index.json` (SD's when it cannot be read)."""
    try:
        class_name = str(json.loads((Path(path) / "model_index.json").read_text(encoding="utf-8"))["_class_name"])
    except (OSError, ValueError, KeyError):
        class_name = "StableDiffusionPipeline"  # the loader reports what is wrong with the folder
    return _TRAITS[family_of_class(class_name)]


def run_dtype(traits: FamilyTraits, device: torch.device | str) -> torch.dtype:
    """The dtype a family runs in on `device`: its CUDA dtype there (float32 for bfloat16 families on GPUs without
    bfloat16, where float16 would overflow), float32 anywhere else."""
    if torch.device(device).type != "cuda":
        return torch.float32
    if traits.cuda_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return torch.float32
    return traits.cuda_dtype


def check_request(traits: FamilyTraits, request: JobRequest) -> None:
    """Raise `InvalidInputError` if `request` asks for something `traits`' family cannot do (the first problem)."""
    problems = family_problems(traits.rules, request)
    if problems:
        raise InvalidInputError(str(problems[0]))


def stamp(images: list[Any], pipe: Any) -> None:
    """Record on each image (`PIL.Image.info`, never encoded into the file) the family and dtype that rendered it."""
    family = traits_of(pipe).family.value
    # `is None`, not `or`: a torch.compile'd UNet (an OptimizedModule) raises on truth testing.
    denoiser = getattr(pipe, "unet", None)
    if denoiser is None:
        denoiser = getattr(pipe, "transformer", None)
    dtype = str(getattr(denoiser, "dtype", None) or pipe.dtype).removeprefix("torch.")
    for image in images:
        image.info[FAMILY_INFO] = family
        image.info[DTYPE_INFO] = dtype


def rendered_by(image: Any) -> tuple[str, str] | None:
    """(family, dtype) that rendered `image`, if `stamp` recorded them."""
    info = getattr(image, "info", {})
    if FAMILY_INFO not in info:
        return None
    return str(info[FAMILY_INFO]), str(info[DTYPE_INFO])
