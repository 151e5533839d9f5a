"""Per-job noise schedulers.

A loaded pipeline is shared by every job that asks for its model, so a job's scheduler choice must not leak into
the next job: the scheduler the model shipped with is stashed on the pipeline the first time it is replaced, every
other scheduler is derived from that original config (never from whatever the previous job left), and
`Scheduler.DEFAULT` puts the original back.

Flow-matching models (SD 3.x, Flux) have their own table: `euler` is their flow-matching Euler, and DPM-Solver++
and UniPC run on flow sigmas with the model's shift. Which names a family accepts is `gpu_worker.families`' call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from producer.jobs import Scheduler

from .errors import InvalidInputError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

# diffusers class name and config overrides per choice, imported lazily: choosing one must not import the others.
_SCHEDULERS: dict[Scheduler, tuple[str, dict[str, Any]]] = {
    Scheduler.DDIM: ("DDIMScheduler", {}),
    Scheduler.EULER: ("EulerDiscreteScheduler", {}),
    Scheduler.EULER_ANCESTRAL: ("EulerAncestralDiscreteScheduler", {}),
    # Pinned so a model that ships an SDE or first-order DPM-Solver still gets plain DPM++ 2M.
    Scheduler.DPMPP_2M: ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    Scheduler.UNIPC: ("UniPCMultistepScheduler", {}),
    # PLMS only, as SD ships it: the Runge-Kutta warm-up steps would triple the cost of the first steps.
    Scheduler.PNDM: ("PNDMScheduler", {"skip_prk_steps": True}),
}
# For flow-matching models: their noise schedule is the sigmas' shift (fixed, or per image size with dynamic
# shifting), which `flow_shift` and the copied `use_dynamic_shifting` carry over.
_FLOW_SCHEDULERS: dict[Scheduler, tuple[str, dict[str, Any]]] = {
    Scheduler.EULER: ("FlowMatchEulerDiscreteScheduler", {}),
    Scheduler.DPMPP_2M: (
        "DPMSolverMultistepScheduler",
        {
            "algorithm_type": "dpmsolver++",
            "solver_order": 2,
            "use_flow_sigmas": True,
            "prediction_type": "flow_prediction",
        },
    ),
    Scheduler.UNIPC: ("UniPCMultistepScheduler", {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}),
}
# Attribute on the pipeline that holds the scheduler the model shipped with.
_ORIGINAL = "_sdqueue_original_scheduler"


def apply_scheduler(pipe: DiffusionPipeline, scheduler: Scheduler) -> None:
    """Give `pipe` the scheduler a job asked for; `Scheduler.DEFAULT` restores the one the model shipped with.

    A fresh scheduler object is made for every non-default choice, configured from the model's own scheduler
    config (so its noise schedule, e.g. SD's `scaled_linear` betas, is kept).
    """
    original = getattr(pipe, _ORIGINAL, None)
    if scheduler is Scheduler.DEFAULT:
        if original is not None:
            pipe.scheduler = original
        return
    if original is None:
        original = pipe.scheduler
        setattr(pipe, _ORIGINAL, original)
    import diffusers

    if "FlowMatch" in type(original).__name__:
        if scheduler not in _FLOW_SCHEDULERS:
            raise InvalidInputError(f"scheduler: {scheduler.value!r} cannot run a flow-matching model")
        class_name, overrides = _FLOW_SCHEDULERS[scheduler]
        if overrides.get("use_flow_sigmas"):
            overrides = {**overrides, "flow_shift": float(original.config.get("shift", 1.0))}
    else:
        class_name, overrides = _SCHEDULERS[scheduler]
    scheduler_class = getattr(diffusers, class_name)
    pipe.scheduler = scheduler_class.from_config(original.config, **overrides)
