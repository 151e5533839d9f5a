"""The GPU worker's errors: torch, diffusers and Hub errors are translated into these where they are raised.

Each class carries the `ErrorCode` a failed job reports, so the actor can turn any `WorkerError` into a
`JobError` without a lookup table.
"""

from __future__ import annotations

from typing import ClassVar

from producer.jobs import ErrorCode


class WorkerError(Exception):
    """Root of every error the GPU worker raises on purpose."""

    #: What a job that failed with this error reports as `JobError.code`.
    error_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL


class ModelNotFoundError(WorkerError):
    """No model under that reference: a missing local path, an unknown or unreachable hub repo, an unsupported URL.

    Retrying on the same worker does not help; the request names something that is not there.
    """

    error_code = ErrorCode.MODEL_NOT_FOUND


class ModelLoadError(WorkerError):
    """The model was found but could not be loaded: missing or corrupt weights, a bad config, an unknown pipeline."""

    error_code = ErrorCode.MODEL_LOAD_FAILED


class JobCanceledError(WorkerError):
    """The job was canceled while it ran; raised from a progress callback to stop denoising at the next step.

    Not a failure: the job ends `canceled`, so its `error_code` is never reported (it is only a fallback).
    """

    error_code = ErrorCode.INTERNAL


class JobTimeoutError(WorkerError):
    """The job ran past its time limit and was stopped."""

    error_code = ErrorCode.TIMEOUT


class OutOfMemoryError(WorkerError):
    """The accelerator ran out of memory (a smaller size or fewer images per job may fit)."""

    error_code = ErrorCode.OUT_OF_MEMORY


class LeaseLostError(WorkerError):
    """This attempt no longer holds the job (another attempt took it over, or it ended): stop without writing."""


class TransientError(WorkerError):
    """A failure worth retrying elsewhere or later (storage or Redis blip); the job goes back to the queue."""


class DeviceFaultError(TransientError):
    """The accelerator hit an error that breaks its CUDA context (an illegal memory access, a device-side assert, an
    Xid fault): every later call in that process would fail. The jobs go back to the queue; the device process is
    replaced before the next cohort."""


class JobInterruptedError(WorkerError):
    """The machine is being reclaimed (spot notice) and the job cannot finish in time: hand it off.

    Raised from a job's step callback; the code that runs the denoising loop fills `snapshot` (a
    `gpu_worker.checkpoint.Snapshot` of the job's images after its last step) before the runner sees it.
    Not a failure: the job goes back to the queue and resumes elsewhere.
    """

    error_code = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        #: The job's state after its last denoising step, or None when no step ran yet (it restarts from 0).
        self.snapshot: object | None = None


class CheckpointError(Exception):
    """A checkpoint cannot be read, or does not fit the run it should resume (the job then restarts from step 0)."""


class InvalidInputError(WorkerError):
    """The request asks for something its model cannot do (a scheduler or negative prompt its family does not use).

    Retrying does not help: the job fails as `invalid_input`, naming the field and what the model accepts.
    """

    error_code = ErrorCode.INVALID_INPUT
