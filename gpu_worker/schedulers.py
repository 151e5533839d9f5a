"""Per-job noise schedulers.

A loaded pipeline is shared by every job that asks for its model, so a job's scheduler choice must not leak into
the next job: the scheduler the model shipped with is stashed on the pipeline the first time it is replaced, every
other scheduler is derived from that original config (never from whatever the previous job left), and
`Scheduler.DEFAULT` puts the original back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from producer.jobs import Scheduler

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

    class_name, overrides = _SCHEDULERS[scheduler]
    scheduler_class = getattr(diffusers, class_name)
    pipe.scheduler = scheduler_class.from_config(original.config, **overrides)
