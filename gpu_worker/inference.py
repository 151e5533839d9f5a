"""Running one text-to-image job on a loaded pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from gpu_worker.errors import OutOfMemoryError
from gpu_worker.schedulers import apply_scheduler
from producer.jobs import JobRequest

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

#: Called after every denoising step with (steps done, total steps); may raise to abort the run.
StepCallback = Callable[[int, int], None]


def generate(pipe: DiffusionPipeline, request: JobRequest, *, on_step: StepCallback | None = None) -> list[Image.Image]:
    """Render the images `request` asks for; image n is drawn from seed `request.seed + n`.

    The request must be resolved (`JobRequest.resolved`). Every image gets its own generator, so image n is the
    same whether it is rendered alone with seed s + n or as part of a batch (up to float noise between batch
    sizes). The job's scheduler is applied first (`Scheduler.DEFAULT` restores the model's own).

    `on_step(done, total)` runs after each denoising step; `total` is the scheduler's real step count, which for
    some schedulers differs from `request.steps` (SD's default PNDM takes one more). Whatever it raises, e.g.
    `JobCanceledError`, stops the run at once and propagates. CUDA running out of memory raises `OutOfMemoryError`.
    """
    if request.seed is None:
        raise ValueError("the request must be resolved (seed set) before it is generated")
    apply_scheduler(pipe, request.scheduler)
    generators = _generators(pipe.device, request.seed, request.num_images)

    def step_end(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if on_step is not None:
            on_step(step_index + 1, getattr(pipeline, "num_timesteps", request.steps))
        return callback_kwargs

    try:
        result = pipe(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or None,
            width=request.width,
            height=request.height,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            num_images_per_prompt=request.num_images,
            generator=generators,
            output_type="pil",
            callback_on_step_end=step_end if on_step is not None else None,
        )
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()  # hand the failed run's blocks back before the next job
        raise OutOfMemoryError(_oom_message(request)) from exc
    except RuntimeError as exc:
        if "MPS backend out of memory" not in str(exc):
            raise
        raise OutOfMemoryError(_oom_message(request)) from exc
    return list(result.images)


def _generators(device: torch.device, seed: int, count: int) -> list[torch.Generator]:
    # MPS generators are not reproducible across runs; diffusers draws CPU noise and moves it over instead.
    generator_device = "cpu" if device.type == "mps" else device
    return [torch.Generator(device=generator_device).manual_seed(seed + index) for index in range(count)]


def _oom_message(request: JobRequest) -> str:
    return (
        f"out of accelerator memory rendering {request.num_images} image(s) of {request.width}x{request.height};"
        " try fewer images per job or a smaller size"
    )


def prompt_truncation_warning(pipe: DiffusionPipeline, prompt: str) -> str | None:
    """A message for the job record if the text encoder will not see all of `prompt`, else None.

    CLIP-based pipelines read at most `tokenizer.model_max_length` tokens (77, start and end markers included) and
    silently drop the rest; users should know their prompt was cut.
    """
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None:
        return None
    limit = tokenizer.model_max_length
    # verbose=False: the tokenizer would log its own, less helpful, warning about the same thing.
    count = len(tokenizer(prompt, truncation=False, verbose=False)["input_ids"])
    if count <= limit:
        return None
    return f"prompt is {count} tokens; the model reads only the first {limit}, the rest was ignored"
