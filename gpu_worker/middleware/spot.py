"""Dramatiq middleware: watch the cloud's spot/preemption notice; on one, get the jobs out before the machine goes.

A watcher thread polls the provider's notice (`gpu_worker.notices`). On a `terminate` notice it:
1. stops fetching and hands back every message held but not started (Dramatiq `requeue`: no attempt is counted);
2. sets the shared `Interruption`: each job in flight reads it at its next denoising step and either finishes
   (its remaining steps, at the measured step time, end before the deadline minus a margin) or checkpoints and
   hands itself off (see `JobRunner`): the job is requeued, fenced, with a pointer to its checkpoint;
3. once nothing runs (or the deadline passed), acknowledges the notice (Azure `StartRequests`) and sets `stop`,
   so the worker exits 0 before the machine is reclaimed.
A `rebalance` notice (AWS) does the same except that jobs in flight always finish.

A worker thread that picks up a message after the notice hands it straight back instead of running it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.middleware import SkipMessage

from ..notices import Interruption, Notice, NoticeSource
from .drain import hand_back, hand_back_one, stop_fetching

log = logging.getLogger(__name__)


class SpotWatcher(Middleware):
    """Polls `source` every `poll_interval_s`; on a notice, drains the worker and sets `stop` (see module doc)."""

    def __init__(
        self,
        source: NoticeSource,
        interruption: Interruption,
        stop: threading.Event,
        *,
        poll_interval_s: float = 5.0,
    ) -> None:
        self.source = source
        self.interruption = interruption
        self.stop = stop
        self.poll_interval_s = poll_interval_s
        #: Messages handed back because of the notice (held ones and ones picked up after it).
        self.handed_back = 0
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._worker: Any = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self._worker = worker
        self._thread = threading.Thread(target=self._watch, name="spot-watcher", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._done.set()
        with self._idle:
            self._idle.notify_all()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.source.close()

    def before_process_message(self, broker: Broker, message: Any) -> None:
        if self.interruption.is_set():
            hand_back_one(self._worker, message)  # Dramatiq then acks it, which is a no-op once it is requeued
            self.handed_back += 1
            log.info("handed back 1 held message(s): %s was picked up after the notice", message.message_id)
            raise SkipMessage(f"spot notice: {message.message_id} handed back")
        with self._lock:
            self._running.add(message.message_id)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._idle:
            self._running.discard(message.message_id)
            self._idle.notify_all()

    after_skip_message = after_process_message

    def _watch(self) -> None:
        notice = None
        while notice is None:
            if self._done.is_set() or self.stop.is_set():
                return
            started = time.monotonic()
            try:
                notice = self.source.poll()
            except Exception as exc:  # metadata blips (or no metadata service at all) must not kill the watcher
                log.debug("%s notice poll failed: %s", self.source.provider, exc)
            if notice is None and self._done.wait(max(0.0, self.poll_interval_s - (time.monotonic() - started))):
                return
        self._on_notice(notice)
        # A rebalance recommendation has no deadline: jobs in flight finish, then the worker leaves (the group's
        # capacity rebalancing replaces the machine). A terminate notice: they finish or hand off by the deadline.
        notice = self._wait_for_jobs(notice)
        if notice.kind == "terminate":
            try:
                self.source.acknowledge(notice)
            except Exception as exc:
                log.warning("could not acknowledge the %s notice: %s", self.source.provider, exc)
        log.info("spot notice handled: exiting")
        self.stop.set()

    def _on_notice(self, notice: Notice) -> None:
        log.warning("%s notice (%s): %s", notice.provider, notice.kind, notice.detail)
        self.interruption.set(notice)
        stop_fetching(self._worker)
        self.handed_back += hand_back(self._worker)

    def _wait_for_jobs(self, notice: Notice) -> Notice:
        """Until no job runs here or the deadline has passed; after a rebalance, keeps watching for a terminate."""
        while True:
            with self._idle:
                if not self._running or self._done.is_set():
                    return notice
                left = None if notice.deadline is None else notice.deadline - time.time()
                if left is not None and left <= 0:
                    log.warning("deadline passed with %d job(s) still running", len(self._running))
                    return notice
                self._idle.wait(timeout=self.poll_interval_s if left is None else min(1.0, left))
            if notice.kind == "rebalance":
                try:
                    latest = self.source.poll()
                except Exception as exc:
                    log.debug("%s notice poll failed: %s", self.source.provider, exc)
                    latest = None
                if latest is not None and latest.kind == "terminate":
                    notice = latest
                    log.warning("%s notice (terminate) after the rebalance: %s", notice.provider, notice.detail)
                    self.interruption.set(notice)
