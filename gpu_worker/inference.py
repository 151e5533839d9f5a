"""Running requests on a loaded pipeline: one job, or several compatible jobs in one call.

Text-to-image runs on the loaded pipeline; image-to-image, inpainting, ControlNet and IP-Adapter jobs bring
`PreparedInputs` and run on pipelines derived from it (`gpu_worker.image_call`, `gpu_worker.adapters`).

Every family (SD 1.x/2.x, SDXL, SD 3.x, Flux) runs through diffusers' own pipeline; `gpu_worker.families` says what
a family accepts. Initial noise is drawn from CPU generators, as diffusers' reproducibility guide does: CUDA's
random numbers for a large tensor depend on the GPU model (its SM count), so CUDA generators would give a job other
images on another instance type, and a spot hand-off would continue a run with noise it was not started with.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch

from gpu_worker.checkpoint import DenoiseTap
from gpu_worker.conditioning import Mode, PreparedInputs
from gpu_worker.cuda_faults import cuda_fault
from gpu_worker.errors import DeviceFaultError, JobInterruptedError, OutOfMemoryError
from gpu_worker.families import Family, check_request, stamp, traits_of
from gpu_worker.image_call import check_inputs, cohort_spec, kept_images, overlay, prepare_call, takes_size
from gpu_worker.refiner import refiners_of
from gpu_worker.schedulers import apply_scheduler
from gpu_worker.vae import decoding
from producer.jobs import JobRequest

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

#: Called after every denoising step with (steps done, total steps); may raise to abort the run.
StepCallback = Callable[[int, int], None]


def generate(
    pipe: DiffusionPipeline,
    request: JobRequest,
    *,
    on_step: StepCallback | None = None,
    tap: DenoiseTap | None = None,
    inputs: PreparedInputs | None = None,
) -> list[Image.Image]:
    """Render the images `request` asks for; image n is drawn from seed `request.seed + n`.

    The request must be resolved (`JobRequest.resolved`). Every image gets its own generator, so image n is the
    same whether it is rendered alone with seed s + n or as part of a batch (up to float noise between batch
    sizes). The job's scheduler is applied first (`Scheduler.DEFAULT` restores the model's own).

    `on_step(done, total)` runs after each denoising step; `total` is the scheduler's real step count, which for
    some schedulers differs from `request.steps` (SD's default PNDM takes one more). Whatever it raises, e.g.
    `JobCanceledError`, stops the run at once and propagates. CUDA running out of memory raises `OutOfMemoryError`.
    `tap` (see `gpu_worker.checkpoint`) resumes the run from a checkpoint, and fills the snapshot of a
    `JobInterruptedError` that `on_step` raises. `inputs` are the job's image inputs (None: text-to-image).
    """
    return generate_batch(pipe, [request], on_step=on_step, tap=tap, inputs=[inputs])[0]


def generate_batch(
    pipe: DiffusionPipeline,
    requests: Sequence[JobRequest],
    *,
    on_step: StepCallback | None = None,
    tap: DenoiseTap | None = None,
    inputs: Sequence[PreparedInputs | None] | None = None,
) -> list[list[Image.Image]]:
    """Render several compatible requests (see `gpu_worker.cohorts.cohort_key`) in one pipeline call.

    Returns each request's images, in order. The call always passes one prompt and one generator per image
    (`num_images_per_prompt=1`), whether it holds one job or many, so a job's images do not depend on the code
    path; they differ from the same job rendered alone only by the float noise of a larger batch. All requests
    must share the parameters of the first (size, steps, scheduler, guidance, model); only prompts, negative
    prompts, seeds and image counts may differ. `inputs` holds each request's image inputs (None, or no list: none),
    which must share one `InputSpec`.
    """
    if not requests:
        return []
    first = requests[0]
    if any(r.seed is None for r in requests):
        raise ValueError("the request must be resolved (seed set) before it is generated")
    inputs = list(inputs) if inputs is not None else [None] * len(requests)
    spec = cohort_spec(inputs)
    traits = traits_of(pipe)
    for request in requests:
        check_request(traits, request)
        check_inputs(pipe, spec, request)
    rows = [item for r, item in zip(requests, inputs, strict=True) for _ in range(r.num_images)]
    if spec.keeps_input:
        kept = kept_images(rows)
        stamp(kept, pipe)
        return _split(kept, requests)
    call, image_arguments = prepare_call(pipe, spec, rows, first)
    apply_scheduler(call, first.scheduler)
    prompts = [r.prompt for r in requests for _ in range(r.num_images)]
    # All empty → None: SDXL then uses zero embeddings for the unconditional branch, as it does for a lone job.
    # The batch key keeps jobs with and without a negative prompt apart, so this choice never mixes the two.
    negatives = [r.negative_prompt for r in requests for _ in range(r.num_images)]
    generators = [generator for r in requests for generator in cpu_generators(r.seed, r.num_images)]  # type: ignore[arg-type]
    if tap is not None:
        tap.bind(call, generators)
    refiner = getattr(first, "refiner", None)
    arguments: dict[str, Any] = {
        "prompt": prompts,
        "num_inference_steps": first.steps,
        "guidance_scale": first.guidance_scale,
        "num_images_per_prompt": 1,
        "generator": generators,
        **image_arguments,
    }
    if traits.negative_prompt:  # Flux's pipeline takes one only for "true CFG", which sdqueue does not run
        arguments["negative_prompt"] = negatives if any(negatives) else None
    base = {**arguments, "width": first.width, "height": first.height} if takes_size(call) else dict(arguments)
    if refiner is None:
        base.update(output_type="pil", callback_on_step_end=_step_callback(on_step, first.steps, tap))
    else:
        base.update(output_type="latent", denoising_end=refiner.switch_at)
        base["callback_on_step_end"] = _step_callback(on_step, first.steps, tap, total=first.steps)
    with tap.running() if tap is not None else nullcontext():
        result = _call(call, base, len(prompts), first)
    if refiner is not None:
        stage = refiners_of(pipe).get(refiner.model)
        apply_scheduler(stage, first.scheduler)
        done = tap.step if tap is not None else int(getattr(pipe, "num_timesteps", 0))
        refine = {**arguments, "image": result.images, "denoising_start": refiner.switch_at, "output_type": "pil"}
        refine["callback_on_step_end"] = _refiner_callback(on_step, tap, done)
        result = _call(stage, refine, len(prompts), first)
    images = list(result.images)
    if spec.mode is Mode.INPAINT:
        images = overlay(images, rows)
    stamp(images, pipe)
    return _split(images, requests)


def _split(images: list[Image.Image], requests: Sequence[JobRequest]) -> list[list[Image.Image]]:
    """Each request's images, in order, out of a call's."""
    split, start = [], 0
    for request in requests:
        split.append(images[start : start + request.num_images])
        start += request.num_images
    return split


def _call(pipe: Any, arguments: dict[str, Any], images: int, request: JobRequest) -> Any:
    """One pipeline call; running out of accelerator memory (cuBLAS's and cuDNN's workspaces included) raises
    `OutOfMemoryError`, after the failed call's memory is handed back (outside the `except` block, whose traceback
    would keep the call's tensors alive); a sticky CUDA error raises `DeviceFaultError` (`gpu_worker.cuda_faults`)."""
    failure: OutOfMemoryError | DeviceFaultError
    try:
        with decoding(pipe, request.width, request.height):
            return pipe(**arguments)
    except torch.cuda.OutOfMemoryError:
        failure = OutOfMemoryError(_oom_message(images, request))
    except RuntimeError as exc:
        fault = cuda_fault(exc)
        if fault is None:
            raise
        failure = (
            OutOfMemoryError(f"{_oom_message(images, request)} ({fault})")
            if isinstance(fault, OutOfMemoryError)
            else fault
        )
    if isinstance(failure, OutOfMemoryError):
        gc.collect()  # the failed call's frames are gone now; their reference cycles go too
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # hand the failed run's blocks back before the next batch
    raise failure


def _step_callback(
    on_step: StepCallback | None, steps: int, tap: DenoiseTap | None = None, *, total: int | None = None
) -> Any:
    """The one `callback_on_step_end` of a pipeline call: reports steps; extend it here for per-step hooks.

    `total` overrides the pipeline's step count in progress (a refined job counts both stages' steps)."""
    if on_step is None and tap is None:
        return None

    def step_end(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if tap is not None:
            callback_kwargs = tap.step_end(step_index, callback_kwargs)
            if tap.skipping(step_index):  # replaying the steps before a resume point: not progress
                return callback_kwargs
        if on_step is not None:
            try:
                on_step(step_index + 1, total or int(getattr(pipeline, "num_timesteps", steps)))
            except JobInterruptedError as exc:
                if tap is not None and exc.snapshot is None:
                    exc.snapshot = tap.capture()
                raise
        return callback_kwargs

    return step_end


def _refiner_callback(on_step: StepCallback | None, tap: DenoiseTap | None, done: int) -> Any:
    """The refiner stage's step callback: progress continues from the base stage's `done` steps.

    A spot notice here checkpoints the base stage's final state (the tap's): a resumed job replays the base stage
    to its end and runs the refiner stage again, which needs no other state (it adds no noise).
    """
    if on_step is None:
        return None

    def step_end(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            on_step(done + step_index + 1, done + int(getattr(pipeline, "num_timesteps", 0) or 0))
        except JobInterruptedError as exc:
            if tap is not None and exc.snapshot is None:
                exc.snapshot = tap.capture()
            raise
        return callback_kwargs

    return step_end


def cpu_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, image n seeded `seed + n`: the same noise on every device (see the module doc)."""
    return [torch.Generator(device="cpu").manual_seed(seed + index) for index in range(count)]


def _oom_message(images: int, request: JobRequest) -> str:
    return (
        f"out of accelerator memory rendering {images} image(s) of {request.width}x{request.height};"
        " try fewer images per job or a smaller size"
    )


def prompt_truncation_warning(pipe: DiffusionPipeline, prompt: str) -> str | None:
    """A message for the job record if the text encoders will not see all of `prompt`, else None.

    CLIP reads at most `tokenizer.model_max_length` tokens (77, start and end markers included) and silently drops
    the rest; users should know their prompt was cut. SD 3 and Flux also hand the prompt to T5, which reads 256
    (SD 3) or 512 (Flux) tokens: there CLIP's cut is expected, and only a prompt longer than T5 reads loses words.
    """
    rules = traits_of(pipe).rules
    t5 = {Family.SD3: "tokenizer_3", Family.FLUX: "tokenizer_2"}.get(rules.family)
    t5_tokenizer = getattr(pipe, t5, None) if t5 else None
    if t5_tokenizer is not None:
        # A T5 (SentencePiece) piece covers at least one character; the end marker is the only token added.
        return _cut(t5_tokenizer, prompt, rules.prompt_tokens, len(prompt) + 1)
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None:
        return None
    # CLIP's byte-level BPE gives every token at least one byte of the text: a prompt with no more bytes than the
    # limit minus the start and end markers cannot be cut, and most prompts are that short. Skip the tokenizer.
    return _cut(tokenizer, prompt, tokenizer.model_max_length, len(prompt.encode("utf-8")) + 2)


def _cut(tokenizer: Any, prompt: str, limit: int, most_tokens: int) -> str | None:
    """The warning if `prompt` is more than `limit` tokens; `most_tokens` bounds its count without tokenizing."""
    if most_tokens <= limit:
        return None
    # verbose=False: the tokenizer would log its own, less helpful, warning about the same thing.
    count = len(tokenizer(prompt, truncation=False, verbose=False)["input_ids"])
    if count <= limit:
        return None
    return f"prompt is {count} tokens; the model reads only the first {limit}, the rest was ignored"
