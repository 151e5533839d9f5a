"""Dramatiq middleware: record what this worker costs, for cost accounting (producer/cost.py).

Two figures go to the usage ledger in Redis: uptime (from process start, in slices every `interval_s`, each on
its UTC day) and, per job message processed, the seconds a worker thread spent on it. Uptime is the bill; busy
time decides each job's share of it, so model loading at start, idle time and attempts cut short are spread over
the jobs that ran. A `kill -9` loses at most the last slice of uptime.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from dramatiq import Broker, Middleware
from dramatiq.brokers.redis import RedisBroker

from producer.cost import Capacity, UsageLedger

from .settings import WorkerSettings

log = logging.getLogger(__name__)


class UsageReporter(Middleware):
    """Reports uptime and per-job busy seconds of a worker running on `instance_type` bought as `capacity`."""

    def __init__(self, instance_type: str, capacity: Capacity, *, interval_s: float = 30.0) -> None:
        self.instance_type = instance_type
        self.capacity = capacity
        self.interval_s = interval_s
        self._since = time.time()  # the process started just now: loading models counts as uptime, not as a job
        self._ledger: UsageLedger | None = None
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        assert isinstance(broker, RedisBroker)
        self._ledger = UsageLedger(broker.client)
        self._flush()
        self._thread = threading.Thread(target=self._loop, name="usage", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._flush()

    def before_process_message(self, broker: Broker, message: Any) -> None:
        with self._lock:
            self._started[message.message_id] = time.monotonic()

    def after_process_message(self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None) -> None:
        with self._lock:
            started = self._started.pop(message.message_id, None)
        job_id = _job_id(message)
        if started is None or job_id is None or self._ledger is None:
            return
        try:
            self._ledger.add_job(job_id, self.instance_type, self.capacity, time.monotonic() - started, at=time.time())
        except redis.RedisError as exc:  # a lost figure must never fail a job
            log.warning("cannot record GPU time of job %s: %s", job_id, exc)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        with self._lock:
            self._started.pop(message.message_id, None)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._flush()

    def _flush(self) -> None:
        if self._ledger is None:
            return
        with self._lock:
            now = time.time()
            since, self._since = self._since, now
        try:
            self._ledger.add_uptime(self.instance_type, self.capacity, now - since, at=now)
        except redis.RedisError as exc:
            with self._lock:  # keep the slice: the next flush adds it
                self._since = min(self._since, since)
            log.warning("cannot record uptime: %s", exc)


def _job_id(message: Any) -> str | None:
    args = getattr(message, "args", ())
    if args and isinstance(args[0], dict) and isinstance(args[0].get("job_id"), str):
        return str(args[0]["job_id"])
    return None


def usage_reporter(settings: WorkerSettings) -> UsageReporter:
    """The reporter for this worker's instance type and capacity type (spot when it watches spot notices)."""
    spot = settings.capacity_type == "spot" or (settings.capacity_type == "auto" and settings.spot != "none")
    capacity = Capacity.SPOT if spot else Capacity.ON_DEMAND
    return UsageReporter(settings.instance_type, capacity, interval_s=settings.usage_interval_s)
