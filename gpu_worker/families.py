"""Model families: what a loaded pipeline is (SD 1.x/2.x, SDXL, SD 3.x, Flux) and how it must be run.

A family fixes the dtype on CUDA (float16 for the UNet families, bfloat16 for the flow-matching transformers, which
overflow in float16), the schedulers a job may pick (flow-matching models cannot use the DDPM-family samplers), and
whether a negative prompt or guidance scale means anything. The family is read from the pipeline class diffusers
loaded (`model_index.json`'s `_class_name`), never guessed from the model's name. Everything runs in float32 off
CUDA. A request the family cannot serve fails on the worker with `InvalidInputError`, naming the field.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from producer.jobs import JobRequest, Scheduler

from .errors import InvalidInputError

_UNET_SCHEDULERS = frozenset(Scheduler)
# Flow matching: Euler on the flow (the models' own), and DPM-Solver++/UniPC on flow sigmas. DDIM and PNDM are
# noise-prediction samplers, and FlowMatchEuler's stochastic variant draws noise without the job's generator.
_FLOW_SCHEDULERS = frozenset({Scheduler.DEFAULT, Scheduler.EULER, Scheduler.DPMPP_2M, Scheduler.UNIPC})
#: Key of a rendered image's `PIL.Image.info` entries that name the family and dtype that rendered it.
FAMILY_INFO = "sdqueue_family"
DTYPE_INFO = "sdqueue_dtype"


class Family(str, enum.Enum):
    """A model family, by architecture."""

    SD = "sd"  # SD 1.x / 2.x
    SDXL = "sdxl"
    SD3 = "sd3"
    FLUX = "flux"
    OTHER = "other"  # any other text-to-image pipeline diffusers loads: run with its own scheduler only


@dataclass(frozen=True)
class FamilyTraits:
    """How a family runs: dtype on CUDA, schedulers allowed, and which prompt controls apply."""

    family: Family
    cuda_dtype: torch.dtype
    schedulers: frozenset[Scheduler]
    negative_prompt: bool
    guidance: bool
    flow_matching: bool


_TRAITS = {
    Family.SD: FamilyTraits(Family.SD, torch.float16, _UNET_SCHEDULERS, True, True, False),
    Family.SDXL: FamilyTraits(Family.SDXL, torch.float16, _UNET_SCHEDULERS, True, True, False),
    Family.SD3: FamilyTraits(Family.SD3, torch.bfloat16, _FLOW_SCHEDULERS, True, True, True),
    # Flux.1 is guidance-distilled: no negative branch; dev embeds the guidance scale, schnell ignores it.
    Family.FLUX: FamilyTraits(Family.FLUX, torch.bfloat16, _FLOW_SCHEDULERS, False, True, True),
    Family.OTHER: FamilyTraits(Family.OTHER, torch.float16, frozenset({Scheduler.DEFAULT}), True, True, False),
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
        return FamilyTraits(**{**traits.__dict__, "guidance": False})
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
    """Raise `InvalidInputError` if `request` asks for something `traits`' family cannot do."""
    name = traits.family.value
    if request.scheduler not in traits.schedulers:
        allowed = ", ".join(sorted(s.value for s in traits.schedulers))
        raise InvalidInputError(f"scheduler: {name} models cannot use {request.scheduler.value!r} (allowed: {allowed})")
    if request.negative_prompt and not traits.negative_prompt:
        raise InvalidInputError(f"negative_prompt: {name} models do not use a negative prompt; leave it empty")
    refiner = getattr(request, "refiner", None)
    if refiner is not None and traits.family is not Family.SDXL:
        raise InvalidInputError(f"refiner: only SDXL models take a refiner stage, not {name}")


def stamp(images: list[Any], pipe: Any) -> None:
    """Record on each image (`PIL.Image.info`, never encoded into the file) the family and dtype that rendered it."""
    family = traits_of(pipe).family.value
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
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
