"""Spot checkpoint/resume of image jobs: image-to-image (a schedule that starts at `strength`) and inpainting
(mask and masked-image latents recomputed on resume) resume bit-exactly on the same device."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gpu_worker.checkpoint import DenoiseTap, Snapshot, decode_snapshot, encode_snapshot
from gpu_worker.conditioning import ControlUnit, InputSpec, Mode, PreparedInputs
from gpu_worker.errors import JobInterruptedError
from gpu_worker.inference import generate
from producer.jobs import JobRequest, Scheduler

from .inputs_support import half_white, photo, pixels, square_mask

CASES = {
    "img2img": PreparedInputs(InputSpec(Mode.IMAGE, 0.6), image=photo()),
    "inpaint": PreparedInputs(InputSpec(Mode.INPAINT, 0.9), image=photo(), mask=square_mask()),
    "controlnet-img2img": PreparedInputs(
        InputSpec(Mode.IMAGE, 0.7, controlnets=(ControlUnit("tiny-controlnet"),)),
        image=photo(),
        control_images=(half_white(True),),
    ),
}


def _interrupt_at(step: int) -> Any:
    def on_step(done: int, total: int) -> None:
        if done == step:
            raise JobInterruptedError(f"test interruption after step {step}")

    return on_step


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scheduler", [Scheduler.DEFAULT, Scheduler.EULER_ANCESTRAL, Scheduler.DPMPP_2M])
def test_a_resumed_image_job_is_bit_exact(tiny_pipe: Any, job: Any, case: str, scheduler: Scheduler) -> None:
    inputs = CASES[case]
    request: JobRequest = job(steps=10, num_images=2, seed=31, scheduler=scheduler)
    totals: list[int] = []
    uninterrupted = generate(tiny_pipe, request, inputs=inputs, on_step=lambda done, total: totals.append(total))
    with pytest.raises(JobInterruptedError) as caught:
        generate(tiny_pipe, request, inputs=inputs, on_step=_interrupt_at(3), tap=DenoiseTap())
    assert isinstance(caught.value.snapshot, Snapshot)
    snapshot = decode_snapshot(encode_snapshot(caught.value.snapshot))
    assert snapshot.step == 3 and snapshot.total == totals[-1]
    assert snapshot.total <= round(10 * inputs.spec.strength) + 1  # the schedule starts at `strength` (PNDM: +1)

    seen: list[tuple[int, int]] = []
    resumed = generate(
        tiny_pipe,
        request,
        inputs=inputs,
        on_step=lambda done, total: seen.append((done, total)),
        tap=DenoiseTap(resume=snapshot),
    )
    assert seen[0] == (3, snapshot.total) and seen[-1] == (snapshot.total, snapshot.total)
    for whole, continued in zip(uninterrupted, resumed, strict=True):
        assert np.array_equal(pixels(whole), pixels(continued))
