"""Dramatiq middleware: a worker that has had nothing to do for `idle_timeout_s` drains and stops.

Shaped like Dramatiq's TimeLimit watcher: one daemon thread that looks at the worker every `check_s`. "Nothing to
do" means no message running, none fetched and waiting for a thread, none delayed. Before it gives up, the watcher
stops fetching and looks once more, so a message that arrived at the last moment is run, not stranded.

Scale-in is decided here, by the worker that knows it is idle, never by a scaler that cannot see in-flight work.
After `stop` is set, `run_worker` stops the Dramatiq worker and, when `idled` is true, retires the machine.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq import Broker, Middleware

from .busy import BusyClock
from .drain import resume_fetching, stop_fetching

log = logging.getLogger(__name__)


class IdleShutdown(Middleware):
    """Sets `stop` once the worker has been idle for `idle_timeout_s` by `clock` (a `BusyClock` registered with
    the broker too); `idled` tells why the worker stopped."""

    def __init__(
        self, idle_timeout_s: float, stop: threading.Event, clock: BusyClock, *, check_s: float | None = None
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.stop = stop
        self.clock = clock
        self.check_s = check_s if check_s is not None else min(1.0, idle_timeout_s / 4)
        #: True once this middleware decided to stop the worker.
        self.idled = False
        self._worker: Any = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self._worker = worker
        self._thread = threading.Thread(target=self._watch, name="idle-shutdown", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._done.set()

    def idle_for_s(self) -> float:
        """Seconds since the worker last had something to do (0 while it has)."""
        return self.clock.idle_for_s()

    def _watch(self) -> None:
        while not self._done.wait(self.check_s):
            if self.stop.is_set():
                return
            if self.idle_for_s() < self.idle_timeout_s:
                continue
            stop_fetching(self._worker)
            if self.idle_for_s() < self.idle_timeout_s:  # a message slipped in while fetching stopped: run it
                resume_fetching(self._worker)
                continue
            log.info("idle for %.0f s (SDQ_IDLE_TIMEOUT_S): draining and exiting", self.idle_timeout_s)
            self.idled = True
            self.stop.set()
            return
