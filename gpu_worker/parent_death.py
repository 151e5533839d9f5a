"""The device process dies with its worker: a `kill -9` of `sdq worker` must not leave an orphan holding the GPU's
memory while the replacement worker loads its own models.

Linux's parent-death signal (`prctl(PR_SET_PDEATHSIG)`) has the kernel send the child SIGKILL the moment its
parent goes, whatever the child is doing (importing torch, loading weights, inside a CUDA kernel): no pipe write
or thread in the child is needed. Two details make it exact:

- The child sets it first thing, and then compares `getppid()` with the parent it was started by: a parent that
  died before the call would otherwise go unnoticed (the child has been reparented already).
- It must be set before the child imports anything: unpickling a spawned child's target and arguments imports
  `producer` and pydantic models (2.5-4 s here), and a worker killed meanwhile would leave an orphan that
  long. `run_child` is a target whose own import is light: it sets the signal, then unpickles the real function
  and its arguments (`child_payload`). And multiprocessing re-runs the parent's main script in a spawned child
  first (for `sdq worker`, the console script, which imports `producer.cli`): `start_child` hides the script
  from it, since nothing the child needs lives there.
- The signal follows the *thread* that started the child, not the process: a child started from a thread that
  later ends would be killed with it. `start_child` starts children from the main thread or from one daemon thread
  that lives as long as the process.

Elsewhere than Linux this is a no-op; the child then notices its parent's end at its next pipe read or write.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, cast

PR_SET_PDEATHSIG = 1
#: Exit status of a child that found its parent gone before it could ask to die with it.
ORPHANED_EXIT = 70

_starts: queue.Queue[tuple[Callable[[], None], threading.Event, list[BaseException]]] = queue.Queue()
_starter: threading.Thread | None = None
_starter_lock = threading.Lock()
_main_lock = threading.Lock()


def die_with_parent(parent_pid: int | None) -> bool:
    """In a child: be SIGKILLed by the kernel when the parent dies; exit now if `parent_pid` is gone already.

    Returns False where the platform has no parent-death signal (nothing was set)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(ORPHANED_EXIT)  # the parent died before prctl: nobody would ever send the signal
    return True


def child_payload(function: Callable[..., Any], *args: Any) -> bytes:
    """`function` and `args`, pickled for `run_child` (unpickled in the child only once it dies with its parent)."""
    return pickle.dumps((function, args))


def run_child(payload: bytes, *passed: Any) -> None:
    """A spawned child's target: die with the parent, then call the function of `payload` with `passed` (objects
    multiprocessing must hand over itself, such as pipe ends) followed by the payload's arguments."""
    parent = multiprocessing.parent_process()
    die_with_parent(parent.pid if parent is not None else None)
    function, args = pickle.loads(payload)
    function(*passed, *args)


def start_child(start: Callable[[], None]) -> None:
    """Run `start` (a spawn-context `Process.start`) on a thread that ends only with the process, with the main
    script kept from being re-run in the child; waits for it."""
    if threading.current_thread() is threading.main_thread():
        _start_without_main(start)
        return
    done, failed = threading.Event(), cast(list[BaseException], [])
    _starts.put((start, done, failed))
    _ensure_starter()
    done.wait()
    if failed:
        raise failed[0]


def _ensure_starter() -> None:
    global _starter
    with _starter_lock:
        if _starter is None or not _starter.is_alive():
            _starter = threading.Thread(target=_run_starts, name="sdq-child-starter", daemon=True)
            _starter.start()


def _run_starts() -> None:
    while True:
        start, done, failed = _starts.get()
        try:
            _start_without_main(start)
        except BaseException as exc:  # handed back to the caller's thread
            failed.append(exc)
        finally:
            done.set()


def _start_without_main(start: Callable[[], None]) -> None:
    main = sys.modules.get("__main__")
    if main is None:
        start()
        return
    with _main_lock:  # one start at a time sees `__main__` without its script; restored right after
        saved: dict[str, Any] = {
            name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__
        }
        main.__dict__.pop("__file__", None)
        main.__spec__ = None  # `python -m module` would be re-imported by name otherwise
        try:
            start()
        finally:
            main.__dict__.update(saved)
