"""Dramatiq middleware: report this worker's GPU figures and idle timer to Redis (`GET /v1/fleet/workers`).

Every `interval_s` a daemon thread writes one small record (`producer.worker_status`): the GPU's utilization and
memory from NVML, the jobs running, seconds idle and seconds until the idle timeout retires the worker. The
record's TTL is three intervals, so a worker that dies drops out of the list by itself. The thread never touches a
job: a failed read or a Redis error is logged and the next report tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.brokers.redis import RedisBroker

from producer.worker_status import WorkerStatus, clear_status, report_status

from ..gpu_stats import GpuStatsReader
from .busy import BusyClock
from .idle import IdleShutdown

log = logging.getLogger(__name__)

#: A report lives this many intervals: one lost write does not drop a live worker from the list.
TTL_INTERVALS = 3.0


class StatusReporter(Middleware):
    """Writes the status of worker `worker_id` every `interval_s`.

    `device_name` is asked at each report (the device process names its device once it has booted); `clock` is the
    worker's busy clock (registered with the broker); `idle` is its idle-shutdown middleware, None when it never
    retires (SDQ_IDLE_TIMEOUT_S=0)."""

    def __init__(
        self,
        worker_id: str,
        *,
        hostname: str,
        instance_type: str,
        device_name: Callable[[], str],
        gpu: GpuStatsReader,
        clock: BusyClock,
        idle: IdleShutdown | None,
        interval_s: float = 5.0,
    ) -> None:
        self.worker_id = worker_id
        self.hostname = hostname
        self.instance_type = instance_type
        self.device_name = device_name
        self.gpu = gpu
        self.clock = clock
        self.idle = idle
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        assert isinstance(broker, RedisBroker)
        self._client = broker.client
        self._thread = threading.Thread(target=self._loop, name="worker-status", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            clear_status(self._client, self.worker_id)
        except Exception as exc:  # it expires on its own
            log.warning("cannot clear this worker's status: %s", exc)

    def status(self) -> WorkerStatus:
        """This worker's status now."""
        running, idle_s = self.clock.running, self.clock.idle_for_s()
        retires_in_s = None if self.idle is None else max(0.0, self.idle.idle_timeout_s - idle_s)
        device = self.device_name()
        gpu: dict[str, Any] = {}
        if not device.startswith("cuda"):
            gpu["gpu_reason"] = f"runs on {device}: no GPU to report"
        else:
            found = self.gpu.read()
            if not found:
                gpu["gpu_reason"] = self.gpu.reason or "NVML reports no device"
            else:
                stats = found[0]
                gpu = {
                    "gpu_name": stats.name,
                    "utilization_ratio": stats.utilization_ratio,
                    "memory_used_bytes": stats.memory_used_bytes,
                    "memory_total_bytes": stats.memory_total_bytes,
                }
        return WorkerStatus(
            id=self.worker_id,
            hostname=self.hostname,
            instance_type=self.instance_type,
            device=device,
            jobs_running=running,
            idle_s=round(idle_s, 3),
            retires_in_s=None if retires_in_s is None else round(retires_in_s, 3),
            report_s=self.interval_s,
            updated_at=round(time.time(), 3),
            **gpu,
        )

    def _loop(self) -> None:
        while True:
            try:
                report_status(self._client, self.status(), ttl_s=self.interval_s * TTL_INTERVALS)
            except Exception as exc:  # a Redis blip or an NVML fault: this report is lost, the next one tries
                log.warning("status report failed: %s", exc)
            if self._stop.wait(self.interval_s):
                return
