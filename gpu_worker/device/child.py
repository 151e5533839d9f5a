"""The device process's side: boot, then serve `gpu_worker.device.protocol` requests until `Close`.

Light at import: the worker process imports this module (it names `serve` as the child's target) before it imports
torch; the child imports torch and diffusers inside `serve`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ..cuda_faults import cuda_fault
from ..errors import CheckpointError, DeviceFaultError
from .protocol import (
    Answer,
    Capture,
    Captured,
    CaptureFailed,
    Close,
    Closed,
    Failed,
    Generate,
    Generated,
    Loaded,
    Ready,
    Release,
    Step,
    Stop,
    Use,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from producer.jobs import JobRequest

    from ..checkpoint import Snapshot
    from ..conditioning import PreparedInputs
    from ..settings import WorkerSettings
    from .local import LocalSession


#: The exit code of a device process that left after a sticky CUDA error (see `gpu_worker.cuda_faults`).
FAULT_EXIT_CODE = 71
log = logging.getLogger(__name__)


class _Stopped(Exception):
    """The parent asked the running call to stop (every job in it has stopped)."""


def serve(conn: Connection, settings: WorkerSettings, log_level: int) -> None:
    """The device process's main loop (see `gpu_worker.device.process`)."""
    # The worker process handles signals and drains; a Ctrl-C to the process group must not kill a running cohort.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [device]: %(message)s")
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionResetError):  # the worker process is gone
        _serve(conn, settings)


def _serve(conn: Connection, settings: WorkerSettings) -> None:
    import torch

    from ..models import LoadedModels
    from .local import LocalSession
    from .select import resolve_device

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    try:
        device = resolve_device(settings.device)
        if device.type == "cuda" and device.index is not None:
            # The child's current device, before anything touches CUDA: diffusers' probes (xformers) and every
            # bare "cuda" allocate there, not on GPU 0.
            torch.cuda.set_device(device)
        models = LoadedModels.from_settings(settings, device=device)
        models.preload(settings.preload_models)
    except Exception as exc:
        conn.send(Failed(sendable(exc)))
        return
    conn.send(Ready(str(models.device), models.holdings()))
    held: Any = None  # the `models.use` context of the current session
    session: LocalSession | None = None
    try:
        while True:
            match conn.recv():
                case Use(model, loras):
                    try:
                        held = models.use(model, loras=loras)
                        pipe, load_s = held.__enter__()
                    except Exception as exc:
                        held = None
                        _answer(conn, Failed(sendable(cuda_fault(exc) or exc)))
                    else:
                        session = LocalSession(pipe)
                        conn.send(Loaded(load_s, models.holdings()))
                case Generate(requests, resume, inputs):
                    assert session is not None, "generate outside a session"
                    _answer(conn, _generate(conn, session, requests, resume, inputs))
                case Release():
                    if held is not None:
                        held.__exit__(None, None, None)
                    held = session = None
                case Close():
                    break
                case Stop() | Capture():
                    pass  # for a call that has already ended (see the protocol)
    finally:
        if held is not None:
            held.__exit__(None, None, None)
        models.close()
    conn.send(Closed())


def _generate(
    conn: Connection,
    session: LocalSession,
    requests: Sequence[JobRequest],
    resume: Snapshot | None,
    inputs: Sequence[PreparedInputs | None],
) -> Answer:
    def on_step(done: int, total: int) -> None:
        conn.send(Step(done, total))
        while conn.poll():  # the parent's answers to earlier steps: a syscall, no wait
            match conn.recv():
                case Stop():
                    raise _Stopped
                case Capture(rows):
                    try:
                        conn.send(Captured(session.capture(rows)))
                    except CheckpointError as exc:
                        conn.send(CaptureFailed(exc))

    try:
        images, warnings = session.generate(requests, on_step, resume=resume, inputs=inputs)
    except Exception as exc:
        return Failed(sendable(cuda_fault(exc) or exc))
    return Generated(images, warnings)


def _answer(conn: Connection, answer: Answer) -> None:
    """Send `answer`; after a sticky CUDA error, then leave: every later call in this process would fail."""
    conn.send(answer)
    if isinstance(answer, Failed) and isinstance(answer.error, DeviceFaultError):
        # No unloading on the way out (it would call into the broken CUDA context again): the kernel drops this
        # process's cache leases, and the parent starts a fresh device process for the next cohort.
        log.error("%s; the device process exits", answer.error)
        conn.close()
        logging.shutdown()
        os._exit(FAULT_EXIT_CODE)


def sendable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling to the parent (the worker's own errors do), else a plain stand-in."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    exc.__traceback__ = None
    return exc
