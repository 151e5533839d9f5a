"""Model families and what each accepts: the one source of the rules the API and the worker both apply.

A family (SD 1.x/2.x, SDXL, SD 3.x, Flux) fixes which schedulers a job may pick (flow-matching models cannot use
the DDPM-family samplers), whether a negative prompt or a guidance scale means anything, whether a refiner stage
applies, what multiple a side must be, and how many prompt tokens its text encoders read. The API checks a request
against its catalog model's family at submission (`producer.catalog`, a 422 naming the field); the worker checks it
again against the family of the pipeline it actually loaded (`gpu_worker.families`, which adds the dtype). Light: no
torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .jobs import Family, JobRequest, Scheduler

_UNET_SCHEDULERS = frozenset(Scheduler)
# Flow matching: Euler on the flow (the models' own), and DPM-Solver++/UniPC on flow sigmas. DDIM and PNDM are
# noise-prediction samplers, and FlowMatchEuler's stochastic variant draws noise without the job's generator.
_FLOW_SCHEDULERS = frozenset({Scheduler.DEFAULT, Scheduler.EULER, Scheduler.DPMPP_2M, Scheduler.UNIPC})
#: What CLIP reads of a prompt: 77 tokens, start and end markers included.
CLIP_TOKENS = 77


@dataclass(frozen=True)
class FamilyRules:
    """What a family's pipelines accept (see the module doc)."""

    family: Family
    schedulers: frozenset[Scheduler]
    negative_prompt: bool
    guidance: bool
    flow_matching: bool
    refiner: bool = False
    #: Whether sdqueue runs this family's image-to-image, inpainting, ControlNet and IP-Adapter pipelines
    #: (gpu_worker/image_call.py: SD 1.x/2.x and SDXL).
    image_inputs: bool = False
    #: Width and height must be multiples of this (the VAE's 8×, times the transformer's 2×2 patches for SD 3/Flux).
    side_multiple: int = 8
    #: Prompt tokens the encoder that reads the most of a prompt takes: CLIP's 77, or T5's `max_sequence_length`
    #: as the pipeline runs by default (SD 3: 256, Flux: 512); CLIP's share of SD 3's and Flux's prompt is cut at 77.
    prompt_tokens: int = CLIP_TOKENS


FAMILY_RULES: dict[Family, FamilyRules] = {
    Family.SD: FamilyRules(Family.SD, _UNET_SCHEDULERS, True, True, False, image_inputs=True),
    Family.SDXL: FamilyRules(Family.SDXL, _UNET_SCHEDULERS, True, True, False, refiner=True, image_inputs=True),
    Family.SD3: FamilyRules(Family.SD3, _FLOW_SCHEDULERS, True, True, True, side_multiple=16, prompt_tokens=256),
    # Flux.1 is guidance-distilled: no negative branch; dev embeds the guidance scale, schnell ignores it.
    Family.FLUX: FamilyRules(Family.FLUX, _FLOW_SCHEDULERS, False, True, True, side_multiple=16, prompt_tokens=512),
    Family.OTHER: FamilyRules(Family.OTHER, frozenset({Scheduler.DEFAULT}), True, True, False),
}


class Problem(NamedTuple):
    """One thing a request asks for that its model cannot do: the field, and what the model accepts."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def family_problems(rules: FamilyRules, request: JobRequest, *, model: str | None = None) -> list[Problem]:
    """What `request` asks for that `rules`' family cannot do (empty: nothing). `model` names it in the messages
    (default: the family, e.g. "flux models")."""
    who, does, needs = (repr(model), "does", "needs") if model else (f"{rules.family.value} models", "do", "need")
    problems = []
    if request.scheduler not in rules.schedulers:
        allowed = ", ".join(sorted(s.value for s in rules.schedulers))
        problems.append(Problem("scheduler", f"{who} cannot use {request.scheduler.value!r} (allowed: {allowed})"))
    if request.negative_prompt and not rules.negative_prompt:
        problems.append(Problem("negative_prompt", f"{who} {does} not use a negative prompt; leave it empty"))
    if request.refiner is not None and not rules.refiner:
        problems.append(Problem("refiner", f"only SDXL models take a refiner stage, not {who}"))
    if request.has_inputs:
        problems += _image_problems(rules, request, who, does)
    multiple = rules.side_multiple
    for side in ("width", "height"):
        value = getattr(request, side)
        if value % multiple:
            low = value // multiple * multiple
            problems.append(
                Problem(side, f"{who} {needs} a multiple of {multiple} (got {value}; try {low} or {low + multiple})")
            )
    return problems


def _image_problems(rules: FamilyRules, request: JobRequest, who: str, does: str) -> list[Problem]:
    """Image inputs a family cannot take here, each on the first field that asks for them."""
    if not rules.image_inputs:
        field = "image" if request.image is not None else "controlnets" if request.controlnets else "ip_adapter"
        return [Problem(field, f"{who} {does} not take image inputs here yet (SD 1.x/2.x and SDXL models do)")]
    if request.refiner is not None:
        return [Problem("refiner", "a refiner stage does not combine with image inputs; leave one of them out")]
    return []
