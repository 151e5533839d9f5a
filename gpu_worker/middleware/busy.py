"""Dramatiq middleware: when this worker last had something to do (the idle shutdown and the status report read it).

"Something to do" is a message running, or one fetched and waiting for a thread (`drain.holds_messages`). One
clock, registered once and shared, so the worker's status shows the idle time its idle shutdown acts on.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dramatiq import Broker, Middleware

from .drain import holds_messages


class BusyClock(Middleware):
    """Counts the messages running and the seconds since the worker was last busy."""

    def __init__(self) -> None:
        self._running: set[str] = set()
        self._last_busy = time.monotonic()
        self._lock = threading.Lock()
        self._worker: Any = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        with self._lock:
            self._worker = worker
            self._last_busy = time.monotonic()

    def before_process_message(self, broker: Broker, message: Any) -> None:
        with self._lock:
            self._running.add(message.message_id)
            self._last_busy = time.monotonic()

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            self._running.discard(message.message_id)
            self._last_busy = time.monotonic()

    after_skip_message = after_process_message

    @property
    def running(self) -> int:
        """Messages running now."""
        with self._lock:
            return len(self._running)

    def idle_for_s(self) -> float:
        """Seconds since the worker last had something to do (0 while it has)."""
        with self._lock:
            if self._running or (self._worker is not None and holds_messages(self._worker)):
                self._last_busy = time.monotonic()
            return time.monotonic() - self._last_busy
