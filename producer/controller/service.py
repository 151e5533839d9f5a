"""`sdq controller`: one small always-on CPU process per deployment.

Every tick it reads the work remaining and raises capacity when needed; on their own clocks it runs Dramatiq's
queue maintenance (dead workers' messages return even with zero live workers), the janitor (expired leases, lost
messages) and the cost figures. A dry run reads and decides but changes nothing, printing one line per decision.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import FrameType

import redis
from dramatiq.brokers.redis import RedisBroker

from ..cost import CostCalculator, PriceTable, UsageLedger
from ..runtime import open_backends
from ..settings import ControllerSettings
from ..store import JobStore
from .history import FleetHistory
from .janitor import Janitor
from .maintenance import run_maintenance
from .metrics import ControllerMetrics
from .providers import CapacityProvider, open_provider
from .scaler import Decision, Scaler, ScalingPolicy
from .work import read_work

log = logging.getLogger(__name__)

#: How often today's cost gauges are recomputed.
COST_INTERVAL_S = 60.0


def policy_of(settings: ControllerSettings) -> ScalingPolicy:
    """The scaling policy in the settings."""
    return ScalingPolicy(settings.min_workers, settings.max_workers, settings.worker_concurrency)


class Controller:
    """The controller's loop body, over live connections; `tick()` does whatever is due."""

    def __init__(
        self,
        settings: ControllerSettings,
        *,
        store: JobStore,
        broker: RedisBroker,
        provider: CapacityProvider,
        metrics: ControllerMetrics | None = None,
        dry_run: bool = False,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.provider = provider
        self.metrics = metrics
        self.dry_run = dry_run
        self.emit = emit or (lambda line: None)
        self.scaler = Scaler(
            provider, policy_of(settings), cooldown_s=settings.scale_cooldown_s, refresh_s=settings.capacity_refresh_s
        )
        self.janitor = Janitor(
            store,
            broker,
            queue=settings.queue,
            batch_queue=settings.batch_queue,
            max_attempts=settings.max_attempts,
            lease_grace_s=settings.lease_grace_s,
            lost_message_grace_s=settings.lost_message_grace_s,
        )
        prices = PriceTable.load(settings.prices, settings.prices_file)
        self.costs = CostCalculator(UsageLedger(store.client), prices)
        broker.declare_queue(settings.queue)
        # Every Dramatiq queue of the deployment: the webhook sender's messages must not strand either.
        self.job_queues = [settings.queue, settings.batch_queue]
        webhook_queue = getattr(settings, "webhook_queue", None)
        self.maintained_queues = self.job_queues + ([webhook_queue] if webhook_queue else [])
        self._due = {"maintenance": 0.0, "janitor": 0.0, "cost": 0.0}
        self.history = FleetHistory(store.client)  # the dashboard's fleet chart

    def _is_due(self, task: str, interval_s: float) -> bool:
        now = time.monotonic()
        if now < self._due[task]:
            return False
        self._due[task] = now + interval_s
        return True

    def tick(self) -> Decision:
        """Maintenance and janitor when due, then one scaling decision (after them: they move messages)."""
        settings = self.settings
        if not self.dry_run and self._is_due("maintenance", settings.resolved_maintenance_interval_s):
            calls = run_maintenance(self.broker, self.maintained_queues)
            if self.metrics:
                self.metrics.maintenance.inc(calls)
        if self._is_due("janitor", settings.janitor_interval_s):
            report = self.janitor.sweep(dry_run=self.dry_run)
            if self.metrics:
                self.metrics.observe_janitor(report)
            if self.dry_run and (report.expired or report.reenqueued or report.suspects):
                self.emit(report.describe() + " (dry run: nothing changed)")
        if self.metrics and self._is_due("cost", COST_INTERVAL_S):
            self.metrics.observe_cost(self.costs.day(datetime.now(timezone.utc).date()))
        work = read_work(
            self.store.client,
            self.job_queues,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            namespace=self.broker.namespace,
        )
        decision = self.scaler.decide(work, dry_run=self.dry_run)
        if self.metrics:
            self.metrics.observe_decision(decision, self.provider.name)
        self.emit(decision.describe())
        if not self.dry_run:
            self.history.record(decision)
        return decision

    def run(self, stop: threading.Event, *, ticks: int | None = None) -> None:
        """Tick every `controller_interval_s` until `stop` is set (or `ticks` ticks have run)."""
        done = 0
        while not stop.is_set():
            try:
                self.tick()
            except redis.RedisError as exc:  # Redis down for a moment: keep going, the next tick retries
                log.warning("controller tick failed: %s", exc)
            except Exception:  # an always-on process: one bad tick must not stop scaling and maintenance
                log.exception("controller tick failed")
            done += 1
            if ticks is not None and done >= ticks:
                return
            stop.wait(self.settings.controller_interval_s)


def run_controller(
    settings: ControllerSettings,
    *,
    dry_run: bool = False,
    ticks: int | None = None,
    emit: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the controller until SIGTERM/SIGINT (or `ticks` ticks); returns the exit code."""
    stop = stop or threading.Event()
    with open_backends(settings) as backends:
        metrics = ControllerMetrics()
        # A dry run often runs beside the live controller: it must not take its metrics port.
        if settings.controller_metrics_port is not None and not dry_run:
            server = metrics.serve(settings.controller_metrics_host, settings.controller_metrics_port)
            log.info("metrics on %s:%d", settings.controller_metrics_host, server.server_port)
        controller = Controller(
            settings,
            store=backends.store,
            broker=backends.broker,
            provider=open_provider(settings),
            metrics=metrics,
            dry_run=dry_run,
            emit=emit,
        )

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        log.info(
            "controller: queue %s, provider %s, workers %d–%d%s",
            settings.queue,
            settings.provider,
            settings.min_workers,
            settings.max_workers,
            " (dry run)" if dry_run else "",
        )
        controller.run(stop, ticks=ticks)
    return 0
