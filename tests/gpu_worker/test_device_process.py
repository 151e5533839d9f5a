"""The device process: a real spawned child running the real tiny pipeline, driven by the real executor."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_worker.checkpoint import Snapshot
from gpu_worker.cohorts import CohortJob
from gpu_worker.device import DeviceProcess, DeviceProcessError
from gpu_worker.errors import JobCanceledError, JobInterruptedError, ModelNotFoundError
from gpu_worker.executor import GpuExecutor
from gpu_worker.inference import generate
from gpu_worker.models import LoadedModels
from gpu_worker.settings import WorkerSettings
from producer.jobs import JobRequest, new_job_id

MakeJob = Callable[..., JobRequest]


def _ignore(done: int, total: int) -> None:
    pass


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _settings(model_cache: Path) -> WorkerSettings:
    return WorkerSettings(device="cpu", model_cache_dir=model_cache, preload_models=["tiny"], torch_threads=1)


@pytest.fixture(scope="module")
def device(model_cache: Path) -> Iterator[DeviceProcess]:
    process = DeviceProcess(_settings(model_cache))
    process.ready()
    yield process
    process.close()


def _run(device: DeviceProcess, jobs: list[tuple[JobRequest, Any]]) -> tuple[GpuExecutor, list[CohortJob]]:
    """Queue `jobs` (request, step callback) before the executor starts, so they form one cohort; wait for them."""
    executor = GpuExecutor(device, max_images=4, wait_ms=0)
    submitted = [executor.submit(new_job_id(), request, on_step) for request, on_step in jobs]
    executor.start()
    for job in submitted:
        job.future.exception(timeout=120)
    executor.shutdown()
    return executor, submitted


def test_the_child_boots_with_its_models_preloaded_and_exits_on_close(model_cache: Path) -> None:
    process = DeviceProcess(_settings(model_cache))
    pid = process.pid
    assert pid is not None and pid != os.getpid()
    process.ready()
    assert process.name == "cpu"
    with process.session("tiny") as (_, load_s):
        assert load_s == 0.0  # preloaded at boot: no load on the first job
    process.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_cohort_runs_in_the_child_in_one_call_with_each_jobs_seed_and_progress(
    device: DeviceProcess, model_cache: Path, job: MakeJob
) -> None:
    requests = [job(prompt="a cat", seed=1, steps=5), job(prompt="a dog", seed=50, num_images=2, steps=5)]
    seen: list[list[int]] = [[], []]
    executor, jobs = _run(device, [(r, lambda d, t, n=n: seen[n].append(d)) for n, r in enumerate(requests)])
    assert executor.pipeline_calls == 1
    results = [j.future.result() for j in jobs]
    assert [len(r.images) for r in results] == [1, 2] and {r.cohort_size for r in results} == {3}
    for steps in seen:
        assert steps == [0, *range(len(steps) - 1)] and len(steps) >= 7  # 0 twice (prepared, started), then each
    # The same jobs rendered one by one in this process: the same images, up to a larger call's float noise.
    models = LoadedModels(cache_dir=model_cache, device="cpu", capacity=1)
    with models.use("tiny") as (pipe, _):
        alone = [generate(pipe, request) for request in requests]
    for result, solo in zip(results, alone, strict=True):
        for in_cohort, single in zip(result.images, solo, strict=True):
            assert np.abs(_pixels(in_cohort) - _pixels(single)).max() <= 2


def test_a_canceled_job_leaves_the_cohort_and_a_fully_canceled_cohort_stops_early(
    device: DeviceProcess, job: MakeJob
) -> None:
    def cancel_at(step: int, seen: list[int]) -> Any:
        def on_step(done: int, total: int) -> None:
            seen.append(done)
            if done >= step:
                raise JobCanceledError(f"canceled at step {done}")

        return on_step

    seen: list[int] = []
    _, (canceled, kept) = _run(device, [(job(steps=6, seed=1), cancel_at(2, seen)), (job(steps=6, seed=2), _ignore)])
    assert isinstance(canceled.future.exception(), JobCanceledError)
    assert len(kept.future.result().images) == 1
    assert seen == [0, 0, 1, 2]  # nothing more reaches a job once it has left

    # Both jobs of a 150-step cohort cancel at step 2: the child stops at its next step end, not 148 steps later.
    times: list[float] = []

    def timed_cancel(done: int, total: int) -> None:
        times.append(time.monotonic())
        cancel_at(2, [])(done, total)

    _, jobs = _run(device, [(job(steps=150, seed=3), timed_cancel), (job(steps=150, seed=4), cancel_at(2, []))])
    assert all(isinstance(j.future.exception(), JobCanceledError) for j in jobs)
    step_s = times[2] - times[1]
    started_next: list[float] = []
    follow_up = GpuExecutor(device, max_images=4, wait_ms=0).start()
    try:
        follow_up.run(new_job_id(), job(steps=2), lambda d, t: started_next.append(time.monotonic()), timeout_s=120)
    finally:
        follow_up.shutdown()
    assert started_next[0] - times[2] < 40 * step_s  # the rest of the call would have taken about 148 steps


def test_an_interrupted_job_gets_a_checkpoint_from_the_child(device: DeviceProcess, job: MakeJob) -> None:
    def interrupt_at_3(done: int, total: int) -> None:
        if done == 3:
            raise JobInterruptedError("spot notice")

    _, (interrupted, kept) = _run(
        device, [(job(steps=8, seed=5), interrupt_at_3), (job(steps=8, seed=6, num_images=2), _ignore)]
    )
    exc = interrupted.future.exception()
    assert isinstance(exc, JobInterruptedError)
    snapshot = exc.snapshot
    assert isinstance(snapshot, Snapshot)
    # Taken at the child's next step end: the step the parent saw, or a later one, and only the job's own row.
    assert 3 <= snapshot.step < snapshot.total and snapshot.latents.shape[0] == 1 and len(snapshot.generators) == 1
    # The tensors crossed the pipe through shared memory (torch's reductions for multiprocessing), not as bytes.
    assert snapshot.latents.is_shared() and all(state.is_shared() for state in snapshot.generators)
    assert len(kept.future.result().images) == 2

    # Resumed in the child from that checkpoint: the job finishes from there.
    resumed: list[int] = []
    executor = GpuExecutor(device, max_images=4, wait_ms=0).start()
    try:
        result = executor.run(
            new_job_id(), job(steps=8, seed=5), lambda d, t: resumed.append(d), timeout_s=60, resume=snapshot
        )
    finally:
        executor.shutdown()
    assert len(result.images) == 1 and resumed[2] == snapshot.step  # 0, 0, then on from the resume point


def test_a_model_that_does_not_load_fails_its_jobs_with_the_workers_error(device: DeviceProcess, job: MakeJob) -> None:
    _, (missing,) = _run(device, [(job(model="/nonexistent/model"), _ignore)])
    assert isinstance(missing.future.exception(), ModelNotFoundError)
    _, (fine,) = _run(device, [(job(), _ignore)])
    assert fine.future.result().images


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(signal.SIGKILL, id="dies"),
        # Alive but silent: killed once it has sent nothing for the job time limit (2 s here).
        pytest.param(signal.SIGSTOP, id="hangs"),
    ],
)
def test_a_child_that_dies_or_hangs_fails_its_cohort_as_transient_and_the_next_cohort_gets_a_new_one(
    model_cache: Path, job: MakeJob, fault: signal.Signals
) -> None:
    process = DeviceProcess(_settings(model_cache).model_copy(update={"job_timeout_s": 2.0}))
    try:
        process.ready()
        first_pid = process.pid
        assert first_pid is not None

        def strike(done: int, total: int) -> None:
            if done == 1:
                os.kill(first_pid, fault)

        started = time.monotonic()
        _, (struck,) = _run(process, [(job(steps=30), strike)])
        assert isinstance(struck.future.exception(), DeviceProcessError)  # a TransientError: the job is retried
        assert time.monotonic() - started < 30
        with pytest.raises(ProcessLookupError):
            os.kill(first_pid, 0)  # gone, not left stopped
        _, (after,) = _run(process, [(job(), _ignore)])
        assert after.future.result().images
        assert process.pid not in (None, first_pid)
    finally:
        process.close()


def test_closing_while_a_cohort_will_not_end_kills_the_child_and_fails_the_cohort(
    model_cache: Path, job: MakeJob
) -> None:
    process = DeviceProcess(_settings(model_cache))
    executor = GpuExecutor(process, max_images=4, wait_ms=0).start()
    try:
        started = threading.Event()
        running = executor.submit(
            new_job_id(), job(steps=150, width=256, height=256), lambda d, t: d > 0 and started.set()
        )
        assert started.wait(120)
        pid = process.pid
        assert pid is not None
        process.close(timeout_s=0.5)  # the cohort holds the device far longer than that
        assert isinstance(running.future.exception(timeout=30), DeviceProcessError)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        executor.shutdown()
        process.close()
