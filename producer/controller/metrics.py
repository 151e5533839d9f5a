"""The controller's Prometheus metrics: queue figures, scaling decisions, janitor and maintenance work, costs."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ..cost import DayCost
from .janitor import JanitorReport
from .scaler import Decision


class ControllerMetrics:
    """Metrics in their own registry (so several controllers in one test process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.work = Gauge("sdq_queue_work_remaining", "Messages that still need a worker.", ["queue"], registry=r)
        self.parts = Gauge(
            "sdq_queue_messages", "Messages by where they are (pending, delayed, in_flight, dead_held).",
            ["queue", "state"], registry=r,
        )  # fmt: skip
        self.workers = Gauge(
            "sdq_workers_holding", "Workers holding messages, live or dead.", ["queue", "liveness"], registry=r
        )
        self.desired = Gauge("sdq_workers_desired", "Workers the work needs (within min/max).", ["queue"], registry=r)
        self.capacity = Gauge("sdq_workers_capacity", "The provider's target size after the decision.", registry=r)
        self.decisions = Counter(
            "sdq_scaling_decisions", "Scaling decisions by action.", ["provider", "action"], registry=r
        )
        self.janitor = Counter("sdq_janitor_actions", "Janitor actions by kind.", ["action"], registry=r)
        self.maintenance = Counter(
            "sdq_maintenance_runs", "Queue maintenance calls (dead workers' requeue).", registry=r
        )
        self.cost = Gauge("sdq_cost_usd", "Today's GPU bill so far (UTC), by part.", ["part"], registry=r)
        self.cost_jobs = Gauge("sdq_cost_jobs", "Job runs that recorded GPU time today (UTC).", registry=r)

    def observe_decision(self, decision: Decision, provider: str) -> None:
        work = decision.work
        self.work.labels(work.queue).set(work.work_remaining)
        for state in ("pending", "delayed", "in_flight", "dead_held"):
            self.parts.labels(work.queue, state).set(getattr(work, state))
        self.workers.labels(work.queue, "live").set(work.live_workers)
        self.workers.labels(work.queue, "dead").set(work.dead_workers)
        self.desired.labels(work.queue).set(decision.desired)
        if decision.target is not None:
            self.capacity.set(decision.target)
        self.decisions.labels(provider, decision.action).inc()

    def observe_janitor(self, report: JanitorReport) -> None:
        for action in ("requeued", "failed", "reenqueued"):
            count = len(getattr(report, action))
            if count:
                self.janitor.labels(action).inc(count)

    def observe_cost(self, bill: DayCost) -> None:
        self.cost.labels("fleet").set(bill.fleet_usd)
        self.cost.labels("gpu").set(bill.gpu_usd)
        self.cost.labels("overhead").set(bill.overhead_usd)
        self.cost_jobs.set(bill.jobs)

    def serve(self, host: str, port: int) -> WSGIServer:
        """Serve /metrics in a daemon thread; returns the server (its `server_port` is the bound port)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server
