"""Which image jobs share a pipeline call: the cohort key's input part, and the executor on the real tiny model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_worker.cohorts import cohort_key
from gpu_worker.conditioning import ControlUnit, InputSpec, IpAdapterUnit, Mode, PreparedInputs, Preprocess
from gpu_worker.executor import GpuExecutor
from gpu_worker.inference import generate
from gpu_worker.models import LoadedModels
from producer.jobs import JobRequest, new_job_id

from .inputs_support import photo, pixels, square_mask

MakeJob = Callable[..., JobRequest]
CANNY = ControlUnit("tiny-controlnet", conditioning_scale=0.8, preprocess=Preprocess.CANNY)


def _key(request: JobRequest, **spec: Any) -> str:
    return cohort_key(request, InputSpec(**spec))


def test_the_key_holds_mode_strength_and_adapters_but_not_the_images(job: MakeJob) -> None:
    request = job()
    img2img = _key(request, mode=Mode.IMAGE, strength=0.6)
    assert img2img == _key(job(prompt="a dog", seed=3), mode=Mode.IMAGE, strength=0.6)  # per-job fields differ
    assert img2img != _key(request, mode=Mode.IMAGE, strength=0.7)
    assert img2img != _key(request, mode=Mode.INPAINT, strength=0.6)
    assert img2img != cohort_key(request)
    with_controlnet = _key(request, mode=Mode.IMAGE, strength=0.6, controlnets=(CANNY,))
    assert with_controlnet != img2img
    assert with_controlnet != _key(
        request, mode=Mode.IMAGE, strength=0.6, controlnets=(ControlUnit("tiny-controlnet", conditioning_scale=0.9),)
    )
    assert _key(request, ip_adapter=IpAdapterUnit("tiny-ip-adapter", 0.5)) != _key(
        request, ip_adapter=IpAdapterUnit("tiny-ip-adapter", 0.6)
    )


def test_plain_text_jobs_keep_their_key_and_img2img_at_strength_1_joins_them(job: MakeJob) -> None:
    request = job()
    assert cohort_key(request) == cohort_key(request, InputSpec())
    assert '"inputs"' not in cohort_key(request)  # exactly the key text-to-image jobs had before image inputs
    assert _key(request, mode=Mode.IMAGE, strength=1.0) == cohort_key(request)


@pytest.fixture
def executor(model_cache: Path) -> Iterator[GpuExecutor]:
    """An executor that is not started yet: tests queue jobs first, so what forms one cohort is deterministic."""
    gpu = GpuExecutor(LoadedModels(cache_dir=model_cache, device="cpu"), max_images=4, wait_ms=0)
    yield gpu
    gpu.shutdown()


def _ignore(done: int, total: int) -> None:
    pass


def test_compatible_image_jobs_share_one_pipeline_call(executor: GpuExecutor, job: MakeJob, tiny_pipe: Any) -> None:
    spec = InputSpec(Mode.INPAINT, 0.8)
    submitted = [
        (job(seed=1), PreparedInputs(spec, photo(0), square_mask())),
        (job(seed=2, prompt="a red fox", num_images=2), PreparedInputs(spec, photo(1), square_mask())),
        (job(seed=3), PreparedInputs(InputSpec(Mode.IMAGE, 0.5), image=photo(2))),  # another spec: its own call
    ]
    progress: dict[int, list[tuple[int, int]]] = {index: [] for index in range(3)}

    def watcher(index: int) -> Callable[[int, int], None]:
        return lambda done, total: progress[index].append((done, total))

    jobs = [
        executor.submit(new_job_id(), request, watcher(index), inputs=inputs)
        for index, (request, inputs) in enumerate(submitted)
    ]
    executor.start()
    results = [cohort_job.future.result(timeout=120) for cohort_job in jobs]
    assert executor.pipeline_calls == 2
    assert [result.cohort_size for result in results] == [3, 3, 1]
    for index, ((request, inputs), result) in enumerate(zip(submitted, results, strict=True)):
        alone = generate(tiny_pipe, request, inputs=inputs)
        assert len(result.images) == len(alone) == request.num_images
        for together, single in zip(result.images, alone, strict=True):
            assert np.abs(pixels(together) - pixels(single)).max() <= 1
        steps = [done for done, _ in progress[index] if done > 0]
        assert steps == list(range(1, progress[index][-1][1] + 1))  # each job's own progress, every step


def test_image_jobs_run_in_the_device_process_as_they_do_in_this_one(
    model_cache: Path, job: MakeJob, tiny_pipe: Any
) -> None:
    from gpu_worker.device import DeviceProcess
    from gpu_worker.settings import WorkerSettings

    settings = WorkerSettings(device="cpu", model_cache_dir=model_cache, preload_models=["tiny"], torch_threads=1)
    device = DeviceProcess(settings)
    spec = InputSpec(Mode.INPAINT, 0.8, controlnets=(ControlUnit("tiny-controlnet"),))
    submitted = [
        (job(seed=seed), PreparedInputs(spec, photo(seed), square_mask(), control_images=(photo(seed + 1),)))
        for seed in (1, 2)
    ]
    try:
        device.ready()
        executor = GpuExecutor(device, max_images=4, wait_ms=0)
        jobs = [executor.submit(new_job_id(), request, _ignore, inputs=inputs) for request, inputs in submitted]
        executor.start()
        results = [cohort_job.future.result(timeout=120) for cohort_job in jobs]
        executor.shutdown()
    finally:
        device.close()
    assert executor.pipeline_calls == 1
    for (request, inputs), result in zip(submitted, results, strict=True):
        [alone] = generate(tiny_pipe, request, inputs=inputs)
        assert np.abs(pixels(result.images[0]) - pixels(alone)).max() <= 1
