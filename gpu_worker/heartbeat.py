"""Dramatiq middleware: keep this worker's broker heartbeat fresh and run queue maintenance on a clock.

Dramatiq's Redis broker refreshes a worker's heartbeat only as a side effect of fetching, and a worker whose
prefetch is full (busy with a long job) does not fetch; after `heartbeat_timeout` its in-flight messages look
abandoned. Maintenance, which returns a dead worker's messages to the queue, runs only by chance (1 command in
1000). This middleware does both deliberately, every quarter heartbeat timeout, and runs `on_beat` on the same
clock (the worker reports what models it holds there, `producer.holdings`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name

log = logging.getLogger(__name__)


def beat(broker: RedisBroker, queue_name: str, *, maintenance: bool) -> None:
    """One heartbeat of `broker` on `queue_name`, optionally with maintenance (requeue dead workers' messages)."""
    # The same call Dramatiq makes for every command, with the maintenance flag chosen instead of rolled.
    broker.scripts["dispatch"](
        keys=[broker.namespace],
        args=[
            "qsize",
            current_millis(),
            queue_name,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            int(maintenance),
            broker._max_unpack_size(),
        ],
    )


class BrokerHeartbeat(Middleware):
    """Beats on every declared queue (and its delay queue) while the worker runs."""

    def __init__(self, interval_s: float, *, on_beat: Callable[[RedisBroker], None] | None = None) -> None:
        self.interval_s = interval_s
        self.on_beat = on_beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        assert isinstance(broker, RedisBroker)
        self._thread = threading.Thread(target=self._loop, args=(broker,), name="broker-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self, broker: RedisBroker) -> None:
        while True:
            try:
                for queue in broker.get_declared_queues():
                    beat(broker, queue, maintenance=True)
                    beat(broker, dq_name(queue), maintenance=True)
                if self.on_beat is not None:
                    self.on_beat(broker)
            except Exception as exc:  # a Redis blip must not kill the heartbeat thread
                log.warning("broker heartbeat failed: %s", exc)
            if self._stop.wait(self.interval_s):
                return
