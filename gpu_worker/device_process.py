"""The device process: the worker's models and pipeline calls, in a child process with an interpreter of its own.

Why: a worker process is busy with more than denoising. While batch k denoises, the threads of batch k-1 encode
PNGs, sign and send uploads, settle jobs in Redis, and Dramatiq fetches and acks messages; every one of them takes
the GIL, and the denoising loop (a Python loop dispatching thousands of small kernels) waits for it at every op.
Measured on a 2-core CPU worker that cost 5-10 % of the pipeline's own speed. In a child process the pipeline calls
have a GIL to themselves; the worker process keeps Dramatiq, Redis, leases, encoding and uploads.

Protocol, over one `multiprocessing` pipe, driven by the executor's thread (one request at a time):

    parent                              child
    ("use", model, loras)           ->  ("ok", load_s) | ("error", exc)
    ("generate", requests, resume)  ->  ("step", done, total)*  then  ("ok", (images, warnings)) | ("error", exc)
      ("stop",)                     ->  (read at the child's next step end: the call stops, ("error", _Stopped))
      ("capture", start, stop)      ->  ("snapshot", Snapshot | CheckpointError), at the child's next step end
    ("release",)                    ->  (no answer)
    ("close",)                      ->  ("ok", None), then the child exits

Step events flow without waiting: the child never stops for the parent, which runs each job's step callback as the
events arrive (a step or so behind) and answers with `stop` or `capture` when a job wants out. A `stop` or
`capture` that reaches the child after its call ended is ignored; the parent has seen the end by then.

The child boots (imports torch and diffusers, preloads `SDQ_PRELOAD_MODELS`) while the worker process connects to
Redis; `ready` waits for it. If the child dies (the kernel's OOM killer, a driver fault), or hangs (silent for
`SDQ_JOB_TIMEOUT_S` in the middle of a request; it is then killed), the batch it was running fails with
`TransientError` (its jobs go back to the queue) and the next batch starts a new child.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

# Only light imports here: the worker process spawns this child before it imports anything heavy (see cli.py).
from .errors import CheckpointError, TransientError

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from producer.jobs import JobRequest

    from .checkpoint import Snapshot
    from .devices import Rendered
    from .inference import StepCallback
    from .lora import LoraLike
    from .settings import WorkerSettings

log = logging.getLogger(__name__)

#: Messages that end a request (anything else during `generate` is a step event or a snapshot).
_FINAL = frozenset({"ok", "error"})


class DeviceProcessError(TransientError):
    """The device process died or stopped answering; the batch goes back to the queue."""


class _Stopped(Exception):
    """The parent asked the running call to stop (every job in it has stopped)."""


class DeviceProcess:
    """A `gpu_worker.devices.Device` whose models live in a child process (see the module doc)."""

    def __init__(self, settings: WorkerSettings, *, log_level: int | None = None) -> None:
        self.settings = settings
        self.name = settings.device
        self._log_level = logging.getLogger().getEffectiveLevel() if log_level is None else log_level
        self._lock = threading.Lock()  # one request at a time (the executor's thread, or `close`)
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._booted = False
        self._closed = False
        self._pending: deque[tuple[Any, ...]] = deque()  # messages read ahead while waiting for a snapshot
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
            self._send(("use", model, list(loras)))
            load_s = self._final(watched=False)
            try:
                yield _RemoteSession(self), float(load_s)
            finally:
                if self._booted:  # not after the child died mid-batch
                    self._send(("release",))

    def close(self, timeout_s: float = 30.0) -> None:
        """Unload and stop the child; one still busy after `timeout_s` (a batch or a load that would not end) is
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
                        self._request(("close",))
                    else:
                        conn.send(("close",))
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
        process = context.Process(
            target=serve, args=(child, self.settings, self._log_level), name="sdq-device", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn, self._booted = process, parent, False
        self._pending.clear()
        log.info("device process %d starting", process.pid)

    def _boot(self) -> None:
        if not self._booted:
            # ("ok", device) once the child has imported torch and loaded its preloaded models: unwatched, since
            # preloading several large models may take longer than one job's time limit.
            self.name = str(self._final(watched=False))
            self._booted = True

    def _send(self, message: tuple[Any, ...]) -> None:
        assert self._conn is not None
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:
            raise self._died(exc) from exc

    def _next(self, *, watched: bool = True) -> tuple[Any, ...]:
        """The child's next message. `watched`: a child silent for `SDQ_JOB_TIMEOUT_S` hangs (a driver fault, a
        deadlock): no denoising step takes longer than a job's whole time limit. It is killed."""
        if self._pending:
            return self._pending.popleft()
        assert self._conn is not None
        try:
            if watched and not self._conn.poll(self.settings.job_timeout_s):
                raise self._hung()
            message: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(exc) from exc
        return message

    def _final(self, *, watched: bool = True) -> Any:
        """Read up to the end of the current request; its result, or raise its error."""
        while True:
            message = self._next(watched=watched)
            if message[0] == "ok":
                return message[1]
            if message[0] == "error":
                raise message[1]

    def _request(self, message: tuple[Any, ...]) -> Any:
        self._send(message)
        return self._final()

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
    """A model held in the device process for one batch; see `gpu_worker.devices.Session`."""

    def __init__(self, device: DeviceProcess) -> None:
        self._device = device

    def generate(self, requests: Sequence[JobRequest], on_step: StepCallback, *, resume: Any = None) -> Rendered:
        device = self._device
        device._send(("generate", list(requests), resume))
        stopped: BaseException | None = None
        while True:
            message = device._next()
            kind = message[0]
            if kind == "step":
                if stopped is None:
                    try:
                        on_step(message[1], message[2])
                    except BaseException as exc:  # the job(s) want out: the child stops at its next step end
                        stopped = exc
                        device._send(("stop",))
            elif kind == "snapshot":
                continue  # a capture the parent gave up waiting for
            elif kind in _FINAL:
                if stopped is not None:
                    raise stopped
                if kind == "error":
                    raise message[1]
                images, warnings = message[1]
                return images, warnings

    def capture(self, rows: slice) -> Snapshot:
        """Checkpoint `rows` at the child's next step end (it may already be a step past the one being reported)."""
        device = self._device
        device._send(("capture", rows.start, rows.stop))
        held: list[tuple[Any, ...]] = []
        try:
            while True:
                message = device._next()
                if message[0] == "snapshot":
                    if isinstance(message[1], BaseException):
                        raise message[1]
                    snapshot: Snapshot = message[1]
                    return snapshot
                held.append(message)
                if message[0] in _FINAL:
                    raise CheckpointError("the pipeline call ended before the checkpoint could be taken")
        finally:
            device._pending.extendleft(reversed(held))


# --- the child ---


def serve(conn: Connection, settings: WorkerSettings, log_level: int) -> None:
    """The device process's main loop (see the module doc)."""
    # The worker process handles signals and drains; a Ctrl-C to the process group must not kill a running batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [device]: %(message)s")
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionResetError):  # the worker process is gone
        _serve(conn, settings)


def _serve(conn: Connection, settings: WorkerSettings) -> None:
    import torch

    from .device import resolve_device
    from .devices import LocalSession
    from .models import LoadedModels

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    try:
        models = LoadedModels.from_settings(settings, device=resolve_device(settings.device))
        models.preload(settings.preload_models)
    except Exception as exc:
        conn.send(("error", _sendable(exc)))
        return
    conn.send(("ok", str(models.device)))
    held: Any = None  # the `models.use` context of the current session
    session: LocalSession | None = None
    try:
        while True:
            message = conn.recv()
            kind = message[0]
            if kind == "use":
                try:
                    held = models.use(message[1], loras=message[2])
                    pipe, load_s = held.__enter__()
                except Exception as exc:
                    held = None
                    conn.send(("error", _sendable(exc)))
                else:
                    session = LocalSession(pipe)
                    conn.send(("ok", load_s))
            elif kind == "generate":
                assert session is not None, "generate outside a session"
                conn.send(_generate(conn, session, message[1], message[2]))
            elif kind == "release":
                if held is not None:
                    held.__exit__(None, None, None)
                held = session = None
            elif kind == "close":
                break
            # else: a `stop` or `capture` for a call that has already ended (see the module doc)
    finally:
        if held is not None:
            held.__exit__(None, None, None)
        models.close()
    conn.send(("ok", None))


def _generate(conn: Connection, session: Any, requests: list[JobRequest], resume: Any) -> tuple[str, Any]:
    def on_step(done: int, total: int) -> None:
        conn.send(("step", done, total))
        while conn.poll():  # the parent's answers to earlier steps: a syscall, no wait
            command = conn.recv()
            if command[0] == "stop":
                raise _Stopped
            if command[0] == "capture":
                try:
                    conn.send(("snapshot", session.capture(slice(command[1], command[2]))))
                except CheckpointError as exc:
                    conn.send(("snapshot", exc))

    try:
        return "ok", session.generate(requests, on_step, resume=resume)
    except Exception as exc:
        return "error", _sendable(exc)


def _sendable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling to the parent (the worker's own errors do), else a plain stand-in."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    exc.__traceback__ = None
    return exc
