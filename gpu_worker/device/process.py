"""The device process: the worker's models and pipeline calls, in a child process with an interpreter of its own.

Why: a worker process is busy with more than denoising. While cohort k denoises, the threads of cohort k-1 encode
PNGs, sign and send uploads, settle jobs in Redis, and Dramatiq fetches and acks messages; every one of them takes
the GIL, and the denoising loop (a Python loop dispatching thousands of small kernels) waits for it at every op.
Measured on a 2-core CPU worker that cost 5-10 % of the pipeline's own speed. In a child process the pipeline calls
have a GIL to themselves; the worker process keeps Dramatiq, Redis, leases, encoding and uploads.

The protocol is typed data (`gpu_worker.device.protocol`) over one `multiprocessing` pipe, driven by the executor's
thread (one request at a time); the child's loop is `gpu_worker.device.child.serve`. Step events flow to the
parent without the child ever waiting; a job that wants out is answered at the child's next step end.

The child boots (imports torch and diffusers, preloads `SDQ_PRELOAD_MODELS`) while the worker process connects to
Redis; `ready` waits for it. If the child dies (the kernel's OOM killer, a driver fault), or hangs (silent for
`SDQ_JOB_TIMEOUT_S` in the middle of a request; it is then killed), the cohort it was running fails with
`TransientError` (its jobs go back to the queue) and the next cohort starts a new child. So does a sticky CUDA error
(an illegal memory access, a device-side assert, an Xid fault: `gpu_worker.cuda_faults`), after which the child would
fail every later call: it answers `DeviceFaultError` (a `TransientError`) and exits, and is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, TypeVar

# Only light imports here: the worker process spawns this child before it imports anything heavy (see cli.py).
from producer.holdings import Holdings

from ..errors import CheckpointError, DeviceFaultError, TransientError
from ..parent_death import child_payload, run_child, start_child
from .child import serve
from .protocol import (
    Answer,
    Capture,
    Captured,
    CaptureFailed,
    Close,
    Closed,
    Failed,
    FromChild,
    Generate,
    Generated,
    Loaded,
    Ready,
    Release,
    Step,
    Stop,
    ToChild,
    Use,
)

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from producer.jobs import JobRequest

    from ..checkpoint import Snapshot
    from ..conditioning import PreparedInputs
    from ..inference import StepCallback
    from ..lora import LoraLike
    from ..settings import WorkerSettings
    from .base import Rendered

log = logging.getLogger(__name__)

_A = TypeVar("_A", Ready, Loaded, Generated, Closed)


class DeviceProcessError(TransientError):
    """The device process died or stopped answering; the cohort goes back to the queue."""


class DeviceProcess:
    """A `gpu_worker.device.Device` whose models live in a child process (see the module doc)."""

    def __init__(self, settings: WorkerSettings, *, log_level: int | None = None) -> None:
        self.settings = settings
        self.name = settings.device
        self._log_level = logging.getLogger().getEffectiveLevel() if log_level is None else log_level
        self._lock = threading.Lock()  # one request at a time (the executor's thread, or `close`)
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._booted = False
        self._closed = False
        self._pending: deque[FromChild] = deque()  # messages read ahead while waiting for a snapshot
        self._holdings = Holdings()  # as the child last said (with `Ready` and each `Loaded`)
        self._spawn()

    def ready(self) -> None:
        with self._lock:
            self._boot()

    @contextmanager
    def session(self, model: str, *, loras: Iterable[LoraLike] = ()) -> Iterator[tuple[_RemoteSession, float]]:
        with self._lock:
            if self._closed:
                raise DeviceProcessError("the device process is closed")
            if self._process is None or not self._process.is_alive():
                log.warning("the device process is gone; starting a new one")
                self._spawn()
            self._boot()
            # Unwatched: a first use may download a model (minutes for SDXL), under the downloads' own timeouts.
            self._send(Use(model, tuple(loras)))
            loaded = self._final(Loaded, watched=False)
            self._holdings = loaded.holdings or self._holdings
            try:
                yield _RemoteSession(self), float(loaded.load_s)
            finally:
                if self._booted:  # not after the child died mid-cohort
                    self._send(Release())

    def close(self, timeout_s: float = 30.0) -> None:
        """Unload and stop the child; one still busy after `timeout_s` (a cohort or a load that would not end) is
        killed, and its jobs' leases lapse so that other workers take them over."""
        locked = self._lock.acquire(timeout=timeout_s)
        try:
            self._closed = True
            process, conn = self._process, self._conn
            if process is None or conn is None:
                return
            if locked:
                with contextlib.suppress(DeviceProcessError, OSError):
                    if self._booted:
                        self._send(Close())
                        self._final(Closed)
                    else:
                        conn.send(Close())
                process.join(timeout_s)
            if process.is_alive():
                log.warning("the device process did not stop within %.0f s; killing it", timeout_s)
                process.kill()
                process.join(5)
            if locked:
                conn.close()
                self._process = self._conn = None
        finally:
            if locked:
                self._lock.release()

    def holdings(self) -> Holdings:
        """What the child held when it last answered (read without waiting for a running cohort)."""
        return self._holdings

    @property
    def pid(self) -> int | None:
        """The child's process id (None when there is none)."""
        return self._process.pid if self._process is not None else None

    # --- the parent's side of the protocol (callers hold `_lock`) ---

    def _spawn(self) -> None:
        if self._conn is not None:
            self._conn.close()
        # spawn, not fork: a forked child would inherit the parent's threads' locks and could not use CUDA.
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        # run_child: the child dies with this process (SIGKILL included), set before it imports anything heavy.
        payload = child_payload(serve, self.settings, self._log_level)
        process = context.Process(target=run_child, args=(payload, child), name="sdq-device", daemon=True)
        start_child(process.start)  # from a thread that lasts: the child's parent-death signal follows it
        child.close()
        self._process, self._conn, self._booted = process, parent, False
        self._pending.clear()
        log.info("device process %d starting", process.pid)

    def _boot(self) -> None:
        if not self._booted:
            # `Ready` once the child has imported torch and loaded its preloaded models: unwatched, since
            # preloading several large models may take longer than one job's time limit.
            ready = self._final(Ready, watched=False)
            self.name, self._holdings, self._booted = ready.device, ready.holdings or Holdings(), True

    def _send(self, message: ToChild) -> None:
        assert self._conn is not None
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:
            raise self._died(exc) from exc

    def _next(self, *, watched: bool = True) -> FromChild:
        """The child's next message. `watched`: a child silent for `SDQ_JOB_TIMEOUT_S` hangs (a driver fault, a
        deadlock): no denoising step takes longer than a job's whole time limit. It is killed."""
        if self._pending:
            return self._pending.popleft()
        assert self._conn is not None
        try:
            if watched and not self._conn.poll(self.settings.job_timeout_s):
                raise self._hung()
            message: FromChild = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(exc) from exc
        return message

    def _final(self, expected: type[_A], *, watched: bool = True) -> _A:
        """Read up to the end of the current request: its `expected` answer, or raise its error."""
        while True:
            match self._next(watched=watched):
                case Failed(error):
                    raise self._failed(error)
                case expected() as answer:
                    return answer
                case Ready() | Loaded() | Generated() | Closed() as answer:
                    raise _unexpected(answer)

    def _failed(self, error: BaseException) -> BaseException:
        """A request's error; after a sticky CUDA error (`DeviceFaultError`) the child is leaving, and the next
        cohort starts a new one."""
        if isinstance(error, DeviceFaultError):
            log.error("the device process hit a sticky CUDA error and is being replaced: %s", error)
            if self._process is not None:
                self._process.join(10)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join(5)
            self._booted = False
        return error

    def _hung(self) -> DeviceProcessError:
        timeout_s = self.settings.job_timeout_s
        log.error("the device process sent nothing for %.0f s (SDQ_JOB_TIMEOUT_S); killing it", timeout_s)
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
        self._booted = False
        return DeviceProcessError(f"the device process hung (silent for {timeout_s:g} s) and was killed")

    def _died(self, exc: BaseException) -> DeviceProcessError:
        process = self._process
        if process is not None:
            process.join(1)
        code = process.exitcode if process is not None else None
        self._booted = False
        log.error("the device process died (exit code %s): %s", code, exc)
        return DeviceProcessError(f"the device process died (exit code {code})")


class _RemoteSession:
    """A model held in the device process for one cohort; see `gpu_worker.device.Session`."""

    def __init__(self, device: DeviceProcess) -> None:
        self._device = device

    def generate(
        self,
        requests: Sequence[JobRequest],
        on_step: StepCallback,
        *,
        resume: Snapshot | None = None,
        inputs: Sequence[PreparedInputs | None] = (),
    ) -> Rendered:
        device = self._device
        device._send(Generate(tuple(requests), resume, tuple(inputs)))
        stopped: BaseException | None = None
        while True:
            match device._next():
                case Step(done, total):
                    if stopped is None:
                        try:
                            on_step(done, total)
                        except BaseException as exc:  # the job(s) want out: the child stops at its next step end
                            stopped = exc
                            device._send(Stop())
                case Captured() | CaptureFailed():
                    continue  # a capture the parent gave up waiting for
                case _ if stopped is not None:  # the call's end, whatever it was
                    raise stopped
                case Generated(images, warnings):
                    return images, warnings
                case Failed(error):
                    raise device._failed(error)
                case answer:
                    raise _unexpected(answer)

    def capture(self, rows: slice) -> Snapshot:
        """Checkpoint `rows` at the child's next step end (it may already be a step past the one being reported)."""
        device = self._device
        device._send(Capture(rows))
        held: list[FromChild] = []
        try:
            while True:
                match message := device._next():
                    case Captured(snapshot):
                        return snapshot
                    case CaptureFailed(error):
                        raise error
                held.append(message)
                if isinstance(message, Answer):
                    raise CheckpointError("the pipeline call ended before the checkpoint could be taken")
        finally:
            device._pending.extendleft(reversed(held))


def _unexpected(message: FromChild) -> RuntimeError:
    return RuntimeError(f"the device process answered {type(message).__name__} out of turn (a protocol bug)")
