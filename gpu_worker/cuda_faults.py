"""What a CUDA error means for the worker: out of memory by another name, a broken device process, or a bug.

torch raises `torch.cuda.OutOfMemoryError` only for its own allocator. cuBLAS and cuDNN allocate workspaces of
their own and fail with a plain `RuntimeError` (`CUBLAS_STATUS_ALLOC_FAILED`, `CUDNN_STATUS_NOT_ENOUGH_WORKSPACE`)
when memory is short: those are out of memory too, and a smaller call fits.

Other CUDA errors are *sticky*: an illegal memory access, a device-side assert, a launch failure or an Xid fault
leaves the process's CUDA context broken, and every later call in that process fails the same way. No retry in the
same process can help, so they become `DeviceFaultError`: the jobs go back to the queue and the device process is
replaced (`gpu_worker.device.process`).
"""

from __future__ import annotations

import re

from .errors import DeviceFaultError, OutOfMemoryError

#: A library's allocation failure, in the text of a plain RuntimeError.
_OUT_OF_MEMORY = re.compile(
    r"CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_NOT_ENOUGH_WORKSPACE|CUDNN_STATUS_ALLOC_FAILED"
    r"|CUFFT_ALLOC_FAILED|CUSOLVER_STATUS_ALLOC_FAILED|MPS backend out of memory|out of memory"
)
#: Errors after which the CUDA context is unusable (cudaErrorIllegalAddress, cudaErrorAssert, cudaErrorLaunchFailure,
#: ECC and Xid faults, a GPU fallen off the bus).
_STICKY = re.compile(
    r"illegal memory access|device-side assert|unspecified launch failure|misaligned address"
    r"|illegal instruction|uncorrectable ECC error|CUDA error: unknown error|fallen off the bus|\bXid\b"
    r"|CUDA error: an illegal|CUDA error: launch failure|CUDA error: operation not supported on global/shared"
    r"|CUBLAS_STATUS_EXECUTION_FAILED|CUDNN_STATUS_EXECUTION_FAILED|CUDA error: the launch timed out",
    re.IGNORECASE,
)


def cuda_fault(exc: BaseException) -> OutOfMemoryError | DeviceFaultError | None:
    """The worker error `exc` stands for (see the module doc), or None when it is none of these."""
    if not isinstance(exc, RuntimeError) or isinstance(exc, (OutOfMemoryError, DeviceFaultError)):
        return None
    text = str(exc)
    if _STICKY.search(text):
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return DeviceFaultError(f"the GPU failed ({first}); the job goes back to the queue on a fresh device process")
    if _OUT_OF_MEMORY.search(text):
        return OutOfMemoryError(text.strip().splitlines()[0])
    return None
