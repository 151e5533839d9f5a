"""Checkpoint and resume on the real tiny pipeline: a resumed run gives the image an uninterrupted run gives."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_worker.checkpoint import (
    CheckpointError,
    DenoiseTap,
    Snapshot,
    checkpoint_key,
    decode_snapshot,
    encode_snapshot,
)
from gpu_worker.errors import JobInterruptedError
from gpu_worker.inference import generate, generate_batch
from producer.jobs import JobRequest, Scheduler

MakeJob = Callable[..., JobRequest]
#: The schedulers users pick most, plus SD's default (PNDM, with its own multistep history).
SCHEDULERS = [
    Scheduler.DDIM,
    Scheduler.EULER,
    Scheduler.EULER_ANCESTRAL,
    Scheduler.DPMPP_2M,
    Scheduler.UNIPC,
    Scheduler.PNDM,
    Scheduler.DEFAULT,
]


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _interrupt_at(step: int) -> Callable[[int, int], None]:
    def on_step(done: int, total: int) -> None:
        if done == step:
            raise JobInterruptedError(f"test interruption after step {step}")

    return on_step


def _checkpoint(pipe: Any, request: JobRequest, step: int) -> Snapshot:
    """Run `request` until `step`, interrupt it there, and return the snapshot, through bytes (as it travels)."""
    with pytest.raises(JobInterruptedError) as caught:
        generate(pipe, request, on_step=_interrupt_at(step), tap=DenoiseTap())
    snapshot = caught.value.snapshot
    assert isinstance(snapshot, Snapshot)
    return decode_snapshot(encode_snapshot(snapshot))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_resumed_run_matches_an_uninterrupted_one(tiny_pipe: Any, job: MakeJob, scheduler: Scheduler) -> None:
    request = job(scheduler=scheduler, steps=8, num_images=2, seed=99)
    uninterrupted = generate(tiny_pipe, request)
    snapshot = _checkpoint(tiny_pipe, request, step=5)
    assert snapshot.step == 5 and snapshot.total >= 8 and len(snapshot.generators) == 2

    steps_seen: list[int] = []
    resumed = generate(
        tiny_pipe, request, on_step=lambda done, total: steps_seen.append(done), tap=DenoiseTap(resume=snapshot)
    )
    assert steps_seen[0] == 5 and steps_seen[-1] == snapshot.total  # steps before the resume point are not progress
    for whole, continued in zip(uninterrupted, resumed, strict=True):
        assert np.abs(_pixels(whole) - _pixels(continued)).max() <= 1


@pytest.mark.parametrize("scheduler", [Scheduler.EULER_ANCESTRAL, Scheduler.DPMPP_2M, Scheduler.UNIPC])
def test_latents_alone_are_not_enough(tiny_pipe: Any, job: MakeJob, scheduler: Scheduler) -> None:
    """The control: without the scheduler's history and the RNG state, the resumed image drifts visibly."""
    request = job(scheduler=scheduler, steps=8, seed=3)
    uninterrupted = generate(tiny_pipe, request)[0]
    snapshot = _checkpoint(tiny_pipe, request, step=4)
    crippled = Snapshot(
        step=snapshot.step,
        total=snapshot.total,
        scheduler_class=snapshot.scheduler_class,
        latents=snapshot.latents,
        scheduler={k: v for k, v in snapshot.scheduler.items() if k in ("_step_index", "_begin_index")},
        generators=[torch.Generator().manual_seed(12345).get_state()],
    )
    resumed = generate(tiny_pipe, request, tap=DenoiseTap(resume=crippled))[0]
    assert np.abs(_pixels(uninterrupted) - _pixels(resumed)).max() > 2


def test_one_job_of_a_batch_is_checkpointed_alone_and_resumes_alone(tiny_pipe: Any, job: MakeJob) -> None:
    first, second = job(prompt="a fox", seed=10, steps=6), job(prompt="a boat", seed=20, steps=6, num_images=2)
    alone = generate(tiny_pipe, second)
    tap = DenoiseTap()

    def on_step(done: int, total: int) -> None:
        if done == 3:
            raise JobInterruptedError("interrupt the batch")

    with pytest.raises(JobInterruptedError):
        generate_batch(tiny_pipe, [first, second], on_step=on_step, tap=tap)
    snapshot = tap.capture(slice(1, 3))  # the second job's two images
    assert snapshot.latents.shape[0] == 2 and len(snapshot.generators) == 2

    resumed = generate(tiny_pipe, second, tap=DenoiseTap(resume=decode_snapshot(encode_snapshot(snapshot))))
    for expected, got in zip(alone, resumed, strict=True):  # batch vs alone: float noise only
        assert np.abs(_pixels(expected) - _pixels(got)).max() <= 2


def test_a_checkpoint_from_another_scheduler_is_refused(tiny_pipe: Any, job: MakeJob) -> None:
    snapshot = _checkpoint(tiny_pipe, job(scheduler=Scheduler.DDIM, steps=6), step=2)
    with pytest.raises(CheckpointError, match="DDIMScheduler"):
        generate(tiny_pipe, job(scheduler=Scheduler.EULER, steps=6), tap=DenoiseTap(resume=snapshot))
    # and the pipeline is left intact: the denoiser stub is gone
    assert "forward" not in vars(tiny_pipe.unet)
    generate(tiny_pipe, job(steps=2))


def test_garbage_is_not_a_checkpoint() -> None:
    with pytest.raises(CheckpointError):
        decode_snapshot(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        decode_snapshot(b"")


def test_nothing_to_capture_before_the_first_step() -> None:
    with pytest.raises(CheckpointError):
        DenoiseTap().capture()


def test_checkpoint_key() -> None:
    assert checkpoint_key("ab" * 16, 2) == f"checkpoints/{'ab' * 16}/2.pt"


@pytest.mark.gpu
@pytest.mark.parametrize("scheduler", [Scheduler.EULER_ANCESTRAL, Scheduler.DPMPP_2M, Scheduler.UNIPC])
def test_resume_on_cuda_in_half_precision(model_cache: Any, job: MakeJob, scheduler: Scheduler) -> None:
    """On the GPU: CUDA generators, fp16 latents, scheduler tensors on the device."""
    from gpu_worker.pipelines import load_pipeline

    pipe = load_pipeline("tiny", cache_dir=model_cache, device="cuda", local_files_only=True)
    request = job(scheduler=scheduler, steps=10, num_images=2, seed=5)
    uninterrupted = generate(pipe, request)
    snapshot = _checkpoint(pipe, request, step=6)
    resumed = generate(pipe, request, tap=DenoiseTap(resume=snapshot))
    for whole, continued in zip(uninterrupted, resumed, strict=True):
        assert np.abs(_pixels(whole) - _pixels(continued)).max() <= 2


def test_a_denoiser_with_its_own_forward_gets_it_back(tiny_pipe: Any, job: MakeJob) -> None:
    """torch.compile's wrapper holds its compiled forward as an instance attribute: resuming must not lose it."""
    unet = tiny_pipe.unet
    own = types.MethodType(type(unet).forward, unet)
    unet.forward = own
    try:
        request = job(steps=4)
        snapshot = _checkpoint(tiny_pipe, request, step=2)
        generate(tiny_pipe, request, tap=DenoiseTap(resume=snapshot))
        assert vars(unet)["forward"] is own
    finally:
        del unet.forward
