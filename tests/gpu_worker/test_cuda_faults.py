"""CUDA errors other than torch's own out-of-memory, through the real device process on the real tiny pipeline.

A GPU is not needed to raise the errors a GPU raises: the device process is started with
`tests/gpu_worker/faults` on its PYTHONPATH, whose `sitecustomize` puts a forward pre-hook on the child's real UNet
that raises `RuntimeError` with the real messages of cuBLAS, cuDNN and the CUDA runtime (`SDQ_TEST_FAULT`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpu_worker.cohorts import CohortJob
from gpu_worker.cuda_faults import cuda_fault
from gpu_worker.device import DeviceProcess
from gpu_worker.device.child import FAULT_EXIT_CODE
from gpu_worker.errors import DeviceFaultError, OutOfMemoryError, TransientError
from gpu_worker.executor import GpuExecutor
from gpu_worker.settings import WorkerSettings
from producer.jobs import JobRequest, new_job_id

MakeJob = Callable[..., JobRequest]
FAULTS = Path(__file__).parent / "faults"
#: Real messages, as torch raises them (a plain RuntimeError; torch.AcceleratorError on torch ≥ 2.8).
CUBLAS_ALLOC = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
CUDNN_WORKSPACE = "cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE"
ILLEGAL_ACCESS = (
    "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be asynchronously reported at"
    " some other API call, so the stacktrace below might be incorrect.\nFor debugging consider passing"
    " CUDA_LAUNCH_BLOCKING=1"
)
DEVICE_ASSERT = (
    "CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."
)


def _ignore(done: int, total: int) -> None:
    pass


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (CUBLAS_ALLOC, OutOfMemoryError),
        (CUDNN_WORKSPACE, OutOfMemoryError),
        ("MPS backend out of memory (MPS allocated: 1.2 GB)", OutOfMemoryError),
        (ILLEGAL_ACCESS, DeviceFaultError),
        (DEVICE_ASSERT, DeviceFaultError),
        ("CUDA error: unspecified launch failure", DeviceFaultError),
        ("CUDA error: uncorrectable ECC error encountered", DeviceFaultError),
        ("CUDA error: unknown error (Xid 79: GPU has fallen off the bus)", DeviceFaultError),
        ("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)", type(None)),
    ],
)
def test_cuda_errors_are_told_apart_by_what_they_mean(message: str, kind: type) -> None:
    assert isinstance(cuda_fault(RuntimeError(message)), kind)
    assert cuda_fault(ValueError(message)) is None  # only the runtime errors torch raises


def test_a_sticky_error_says_it_is_transient_and_why() -> None:
    fault = cuda_fault(RuntimeError(ILLEGAL_ACCESS))
    assert isinstance(fault, TransientError)  # the jobs go back to the queue
    assert "an illegal memory access was encountered" in str(fault) and "\n" not in str(fault)


@pytest.fixture
def faulty(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, object]], DeviceProcess]]:
    """A real device process whose UNet raises the fault `spec` describes (see `faults/sitecustomize.py`)."""
    started: list[DeviceProcess] = []

    def start(spec: dict[str, object]) -> DeviceProcess:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]))
        monkeypatch.setenv("SDQ_TEST_FAULT", json.dumps(spec))
        settings = WorkerSettings(device="cpu", model_cache_dir=model_cache, preload_models=["tiny"], torch_threads=1)
        process = DeviceProcess(settings)
        started.append(process)
        process.ready()
        return process

    yield start
    for process in started:
        process.close()


def _cohort(executor: GpuExecutor, requests: list[JobRequest]) -> list[CohortJob]:
    """Queue `requests` before the executor starts (so they form one cohort), start it, wait for every job."""
    jobs = [executor.submit(new_job_id(), request, _ignore) for request in requests]
    executor.start()
    for job in jobs:
        job.future.exception(timeout=180)
    return jobs


@pytest.mark.parametrize("message", [CUBLAS_ALLOC, CUDNN_WORKSPACE])
def test_a_library_allocation_failure_splits_the_cohort_like_out_of_memory(
    faulty: Callable[[dict[str, object]], DeviceProcess], job: MakeJob, message: str
) -> None:
    device = faulty({"message": message, "above_images": 1})
    executor = GpuExecutor(device, max_images=4, wait_ms=0)
    try:
        jobs = _cohort(executor, [job(seed=seed) for seed in (1, 2, 3, 4)])
    finally:
        executor.shutdown()
    assert [len(j.future.result().images) for j in jobs] == [1, 1, 1, 1]
    assert executor.pipeline_calls == 1 + 2 + 4  # 4 images, two halves of 2, four singles: none failed `internal`
    assert executor.caps.limit(jobs[0].request) == 1  # and this size now forms cohorts of one


def test_a_sticky_cuda_error_returns_the_jobs_and_replaces_the_device_process(
    faulty: Callable[[dict[str, object]], DeviceProcess], job: MakeJob, tmp_path: Path
) -> None:
    flag = tmp_path / "faulty-gpu"
    flag.touch()
    device = faulty({"message": ILLEGAL_ACCESS, "while_exists": str(flag)})
    broken_pid = device.pid
    executor = GpuExecutor(device, max_images=4, wait_ms=0)
    try:
        failed = _cohort(executor, [job(seed=1), job(seed=2)])
        for cohort_job in failed:
            error = cohort_job.future.exception()
            assert isinstance(error, DeviceFaultError) and isinstance(error, TransientError)  # back to the queue
        # The broken child left by itself; a child that stayed would fail every later job (the hook keeps raising
        # in a process that saw the error once, as a broken CUDA context does).
        assert device._process is not None and device._process.exitcode == FAULT_EXIT_CODE
        flag.unlink()  # the GPU itself is fine: a fresh process on it works
        again = executor.submit(new_job_id(), job(seed=3), _ignore)
        assert len(again.future.result(timeout=180).images) == 1
    finally:
        executor.shutdown()
    assert device.pid != broken_pid
