"""`generate` on the tiny pipeline: sizes, seeds, batches, schedulers, progress and cancellation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gpu_worker.encode import encode_image
from gpu_worker.errors import JobCanceledError
from gpu_worker.inference import generate, prompt_truncation_warning
from producer.jobs import JobRequest, OutputFormat, Scheduler

MakeJob = Callable[..., JobRequest]


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize(("width", "height"), [(64, 64), (128, 96)])
def test_image_has_the_requested_size(tiny_pipe: Any, job: MakeJob, width: int, height: int) -> None:
    images = generate(tiny_pipe, job(width=width, height=height))
    assert len(images) == 1
    assert images[0].size == (width, height)
    assert images[0].mode == "RGB"
    assert _pixels(images[0]).std() > 1  # not a flat image


def test_same_seed_gives_byte_identical_png(tiny_pipe: Any, job: MakeJob) -> None:
    first, second = (encode_image(generate(tiny_pipe, job(seed=7))[0], OutputFormat.PNG) for _ in range(2))
    assert first == second


def test_different_seed_gives_a_different_image(tiny_pipe: Any, job: MakeJob) -> None:
    assert generate(tiny_pipe, job(seed=7))[0].tobytes() != generate(tiny_pipe, job(seed=8))[0].tobytes()


def test_image_n_of_a_batch_uses_seed_plus_n(tiny_pipe: Any, job: MakeJob) -> None:
    batch = generate(tiny_pipe, job(seed=41, num_images=2))
    alone = [generate(tiny_pipe, job(seed=seed))[0] for seed in (41, 42)]
    assert len(batch) == 2
    for in_batch, single in zip(batch, alone, strict=True):
        # Batched and single runs may differ by float rounding, never by more than a couple of levels.
        assert np.abs(_pixels(in_batch) - _pixels(single)).max() <= 2
    assert np.abs(_pixels(batch[0]) - _pixels(batch[1])).max() > 2


@pytest.mark.parametrize("scheduler", list(Scheduler))
def test_every_scheduler_renders(tiny_pipe: Any, job: MakeJob, scheduler: Scheduler) -> None:
    images = generate(tiny_pipe, job(scheduler=scheduler, steps=3))
    assert images[0].size == (64, 64)


def test_on_step_is_called_after_every_step(tiny_pipe: Any, job: MakeJob) -> None:
    calls: list[tuple[int, int]] = []
    generate(tiny_pipe, job(steps=5, scheduler=Scheduler.DDIM), on_step=lambda done, total: calls.append((done, total)))
    assert calls == [(step, 5) for step in range(1, 6)]


def test_default_pndm_reports_its_real_step_count(tiny_pipe: Any, job: MakeJob) -> None:
    calls: list[tuple[int, int]] = []
    generate(tiny_pipe, job(steps=5), on_step=lambda done, total: calls.append((done, total)))
    # SD's PLMS runs one extra model evaluation; progress counts what actually runs.
    total = calls[-1][1]
    assert total in (5, 6)
    assert calls == [(step, total) for step in range(1, total + 1)]


def test_raising_from_on_step_aborts_the_run(tiny_pipe: Any, job: MakeJob) -> None:
    calls: list[int] = []

    def cancel_at_2(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise JobCanceledError("canceled by the user")

    with pytest.raises(JobCanceledError, match="canceled by the user"):
        generate(tiny_pipe, job(steps=10, scheduler=Scheduler.DDIM), on_step=cancel_at_2)
    assert calls == [1, 2]


def test_unresolved_request_is_refused(tiny_pipe: Any, job: MakeJob) -> None:
    with pytest.raises(ValueError, match="resolved"):
        generate(tiny_pipe, job(seed=None))


def test_long_prompt_gets_a_truncation_warning(tiny_pipe: Any) -> None:
    long_prompt = ", ".join(["a beautiful detailed painting of a red fox in the forest at night"] * 6)
    warning = prompt_truncation_warning(tiny_pipe, long_prompt)
    assert warning is not None
    assert warning.startswith("prompt is ")
    assert warning.endswith("tokens; the model reads only the first 77, the rest was ignored")
    assert int(warning.split()[2]) > 77


def test_short_prompt_gets_no_warning(tiny_pipe: Any) -> None:
    assert prompt_truncation_warning(tiny_pipe, "a photo of a cat") is None
    assert prompt_truncation_warning(tiny_pipe, " ".join(["cat"] * 75)) is None  # exactly 77 with start and end
    assert prompt_truncation_warning(tiny_pipe, " ".join(["cat"] * 76)) == (
        "prompt is 78 tokens; the model reads only the first 77, the rest was ignored"
    )
