"""The GPU executor on the real tiny pipeline (CPU): cohorts, per-job seeds, progress, cancellation, OOM."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gpu_worker.cohorts import CohortJob
from gpu_worker.encode import encode_image
from gpu_worker.errors import JobCanceledError, ModelNotFoundError, OutOfMemoryError, TransientError
from gpu_worker.executor import GpuExecutor
from gpu_worker.inference import generate
from gpu_worker.models import LoadedModels
from producer.jobs import ErrorCode, JobRequest, OutputFormat, new_job_id

MakeJob = Callable[..., JobRequest]


def _ignore(done: int, total: int) -> None:
    pass


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture
def models(model_cache: Path) -> LoadedModels:
    return LoadedModels(cache_dir=model_cache, device="cpu", capacity=1)


@pytest.fixture
def executor(models: LoadedModels) -> Iterator[GpuExecutor]:
    """An executor that is not started yet: tests queue jobs first, so what forms one cohort is deterministic."""
    gpu = GpuExecutor(models, max_images=4, wait_ms=0)
    yield gpu
    gpu.shutdown()


def _results(jobs: list[CohortJob]) -> list[Any]:
    return [job.future.result(timeout=120) for job in jobs]


def _submit_all(executor: GpuExecutor, requests: list[JobRequest], on_step: Any = _ignore) -> list[CohortJob]:
    jobs = [executor.submit(new_job_id(), request, on_step) for request in requests]
    executor.start()
    return jobs


def test_jobs_submitted_together_run_in_one_pipeline_call(executor: GpuExecutor, job: MakeJob) -> None:
    requests = [job(prompt="a cat", seed=1), job(prompt="a dog", seed=50, num_images=2), job(prompt="a fox", seed=9)]
    results = _results(_submit_all(executor, requests))
    assert executor.pipeline_calls == 1
    assert [len(r.images) for r in results] == [1, 2, 1]
    assert {r.cohort_size for r in results} == {4} and len({r.started_at for r in results}) == 1
    assert executor.metrics.busy_s > 0


def test_a_job_in_a_cohort_matches_the_same_job_alone_and_reruns_byte_identical(
    executor: GpuExecutor, models: LoadedModels, job: MakeJob
) -> None:
    requests = [job(prompt="a cat", seed=1), job(prompt="a dog", seed=50, num_images=2), job(prompt="a fox", seed=9)]
    together = _results(_submit_all(executor, requests))
    with models.use("tiny") as (pipe, _):
        alone = [generate(pipe, request) for request in requests]
    for result, solo in zip(together, alone, strict=True):
        for in_cohort, single in zip(result.images, solo, strict=True):
            assert np.abs(_pixels(in_cohort) - _pixels(single)).max() <= 2  # float noise of a larger call only
    rerun = GpuExecutor(models, max_images=4, wait_ms=0)
    try:
        again = _results(_submit_all(rerun, requests))
    finally:
        rerun.shutdown()
    assert rerun.pipeline_calls == 1  # run the same way: one cohort of the same shape
    for first, second in zip(together, again, strict=True):
        assert [encode_image(i, OutputFormat.PNG) for i in first.images] == [
            encode_image(i, OutputFormat.PNG) for i in second.images
        ]


def test_incompatible_jobs_run_in_separate_calls(executor: GpuExecutor, job: MakeJob) -> None:
    requests = [job(steps=3), job(steps=4), job(steps=3, width=72), job(steps=3, seed=77)]
    results = _results(_submit_all(executor, requests))
    assert executor.pipeline_calls == 3
    assert [r.cohort_size for r in results] == [2, 1, 1, 2]


def test_a_cohort_holds_at_most_max_images(executor: GpuExecutor, job: MakeJob) -> None:
    results = _results(_submit_all(executor, [job(num_images=3), job(num_images=2), job(num_images=1)]))
    assert [r.cohort_size for r in results] == [4, 2, 4]  # the third job fills the first cohort; the second waits
    assert executor.pipeline_calls == 2


def test_each_job_in_a_cohort_gets_its_own_progress(executor: GpuExecutor, job: MakeJob) -> None:
    seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    jobs = [
        executor.submit(new_job_id(), job(steps=4, seed=s), lambda d, t, k=k: seen[k].append((d, t)))
        for k, s in (("a", 1), ("b", 2))
    ]
    executor.start()
    _results(jobs)
    assert executor.pipeline_calls == 1
    for steps in seen.values():
        assert steps[:2] == [(0, 4), (0, 4)]  # checked as the cohort is prepared, and again right before it runs
        assert [d for d, _ in steps[2:]] == list(range(1, steps[-1][1] + 1)) and steps[-1][1] >= 4


def test_a_canceled_job_leaves_its_cohort_which_finishes_for_the_others(executor: GpuExecutor, job: MakeJob) -> None:
    def cancel_at_2(done: int, total: int) -> None:
        if done >= 2:
            raise JobCanceledError(f"canceled at step {done}")

    canceled = executor.submit(new_job_id(), job(steps=6, seed=1), cancel_at_2)
    kept = executor.submit(new_job_id(), job(steps=6, seed=2), _ignore)
    executor.start()
    with pytest.raises(JobCanceledError, match="step 2"):
        canceled.future.result(timeout=120)
    assert len(kept.future.result(timeout=120).images) == 1
    assert executor.pipeline_calls == 1


def test_a_cohort_stops_early_once_every_job_in_it_is_canceled(executor: GpuExecutor, job: MakeJob) -> None:
    steps_seen: list[int] = []
    stop = threading.Event()

    def on_step(done: int, total: int) -> None:
        steps_seen.append(done)
        if done >= 2:
            stop.set()
        if stop.is_set():
            raise JobCanceledError("canceled")

    jobs = _submit_all(executor, [job(steps=50, seed=1), job(steps=50, seed=2)], on_step)
    for cohort_job in jobs:
        with pytest.raises(JobCanceledError):
            cohort_job.future.result(timeout=120)
    assert max(steps_seen) == 2  # the pipeline call ended at step 2 of 50
    assert executor.pipeline_calls == 1


def test_a_job_canceled_while_queued_never_runs(executor: GpuExecutor, job: MakeJob) -> None:
    def canceled(done: int, total: int) -> None:
        raise JobCanceledError("canceled before it started")

    [dropped] = _submit_all(executor, [job()], canceled)
    with pytest.raises(JobCanceledError):
        dropped.future.result(timeout=120)
    assert executor.pipeline_calls == 0


def _oom_above(models: LoadedModels, images: int) -> Any:
    """Make the real tiny UNet raise the real CUDA out-of-memory error when a call holds more than `images`
    images (a forward pre-hook: the UNet sees 2 samples per image with classifier-free guidance)."""
    with models.use("tiny") as (pipe, _):
        pass

    def hook(module: Any, args: Any) -> None:
        if args[0].shape[0] > 2 * images:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return pipe.unet.register_forward_pre_hook(hook)


def test_out_of_memory_splits_the_cohort_until_it_fits(
    executor: GpuExecutor, models: LoadedModels, job: MakeJob
) -> None:
    handle = _oom_above(models, 1)
    try:
        requests = [job(seed=seed) for seed in (1, 2, 3, 4)]
        results = _results(_submit_all(executor, requests))
    finally:
        handle.remove()
    assert executor.pipeline_calls == 1 + 2 + 4  # 4 images, two halves of 2, four singles
    assert [r.cohort_size for r in results] == [1, 1, 1, 1]
    with models.use("tiny") as (pipe, _):
        for result, request in zip(results, requests, strict=True):
            assert np.abs(_pixels(result.images[0]) - _pixels(generate(pipe, request)[0])).max() <= 2


def test_a_single_job_that_does_not_fit_fails_with_out_of_memory(
    executor: GpuExecutor, models: LoadedModels, job: MakeJob
) -> None:
    handle = _oom_above(models, 1)
    try:
        too_big, fits = _submit_all(executor, [job(num_images=2, seed=1), job(seed=5)])
        with pytest.raises(OutOfMemoryError) as caught:
            too_big.future.result(timeout=120)
        assert len(fits.future.result(timeout=120).images) == 1
    finally:
        handle.remove()
    assert caught.value.error_code is ErrorCode.OUT_OF_MEMORY
    assert executor.pipeline_calls == 3  # 3 images together, then each job alone


def test_a_model_that_does_not_load_fails_its_jobs_and_not_the_executor(executor: GpuExecutor, job: MakeJob) -> None:
    missing = _submit_all(executor, [job(model="/nonexistent/model"), job(model="/nonexistent/model", seed=3)])
    for cohort_job in missing:
        with pytest.raises(ModelNotFoundError):
            cohort_job.future.result(timeout=120)
    assert len(executor.submit(new_job_id(), job(), _ignore).future.result(timeout=120).images) == 1


def test_company_arriving_within_the_wait_joins_the_cohort(models: LoadedModels, job: MakeJob) -> None:
    with GpuExecutor(models, max_images=2, wait_ms=30_000) as gpu:
        first = gpu.submit(new_job_id(), job(seed=1), _ignore)
        # The executor holds the first job for company (up to 30 s); the second one completes the cohort at once.
        second = gpu.submit(new_job_id(), job(seed=2), _ignore)
        assert {r.cohort_size for r in _results([first, second])} == {2}
        assert gpu.pipeline_calls == 1


def test_while_the_device_is_busy_the_next_cohort_keeps_gathering_company(models: LoadedModels, job: MakeJob) -> None:
    started = threading.Event()
    with GpuExecutor(models, max_images=4, wait_ms=10) as gpu:
        busy = gpu.submit(new_job_id(), job(steps=150, width=128, height=128), lambda d, t: started.set())
        assert started.wait(60)
        first = gpu.submit(new_job_id(), job(seed=1), _ignore)
        time.sleep(0.3)  # 30 times the batch wait: alone, `first` would have formed a cohort of its own by now
        assert not busy.future.done()
        second = gpu.submit(new_job_id(), job(seed=2), _ignore)
        assert {r.cohort_size for r in _results([first, second])} == {2}
        assert gpu.pipeline_calls == 2


def test_a_lone_job_waits_at_most_the_batch_wait(models: LoadedModels, job: MakeJob) -> None:
    with GpuExecutor(models, max_images=4, wait_ms=50) as gpu:
        [result] = _results([gpu.submit(new_job_id(), job(), _ignore)])
    assert result.cohort_size == 1


def test_shutdown_fails_jobs_still_queued(models: LoadedModels, job: MakeJob) -> None:
    gpu = GpuExecutor(models, max_images=4, wait_ms=0)
    pending = gpu.submit(new_job_id(), job(), _ignore)
    gpu.shutdown()
    with pytest.raises(TransientError, match="shut down"):
        pending.future.result(timeout=10)
    with pytest.raises(RuntimeError):
        gpu.submit(new_job_id(), job(), _ignore)


def test_after_out_of_memory_that_size_forms_cohorts_that_fit_and_retries_run_outside_the_handler(
    models: LoadedModels, job: MakeJob
) -> None:
    with models.use("tiny") as (pipe, _):
        pass
    calls: list[tuple[int, BaseException | None]] = []  # images per UNet call, and the exception being handled then

    def hook(module: Any, args: Any) -> None:
        images = args[0].shape[0] // 2  # classifier-free guidance: two samples per image
        calls.append((images, sys.exc_info()[1]))
        if images > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = pipe.unet.register_forward_pre_hook(hook)
    # A long batch wait: a cohort forms only once it is as full as its size allows.
    gpu = GpuExecutor(models, max_images=4, wait_ms=60_000)
    try:
        first = _submit_all(gpu, [job(seed=seed) for seed in (1, 2, 3, 4)])
        assert {r.cohort_size for r in _results(first)} == {2}
        assert gpu.pipeline_calls == 3  # 4 images failed, then two halves of 2
        second = [gpu.submit(new_job_id(), job(seed=seed), _ignore) for seed in (5, 6, 7, 8)]
        assert {r.cohort_size for r in _results(second)} == {2}
        assert gpu.pipeline_calls == 3 + 2  # formed two at a time: no second failed call
    finally:
        handle.remove()
        gpu.shutdown()
    assert [images for images, _ in calls if images > 2] == [4]
    # No retry ran inside an `except` block, whose traceback would keep the failed call's tensors alive.
    assert [handling for _, handling in calls] == [None] * len(calls)
    assert gpu.caps.limit(job(width=128, height=128)) == 4  # another size is not capped
