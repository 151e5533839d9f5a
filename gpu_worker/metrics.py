"""The worker's Prometheus metrics, and the middleware that serves them over HTTP (`SDQ_METRICS_PORT`).

Each worker has its own registry (no global state: several workers, or tests, may live in one process). Counters
and histograms are updated as jobs end; the busy fraction and the GPU figures are read when scraped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from dramatiq import Broker, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from producer.jobs import JobStatus, Timings

from .gpu_stats import GpuStatsReader

log = logging.getLogger(__name__)

#: Job phases timed in the job record (`Timings` fields without the `_s`), each one histogram label.
PHASES = ("queue_wait", "load", "inference", "encode", "upload")
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class WorkerMetrics:
    """Every figure a worker exports; `busy_seconds` is the executor's running total of time spent denoising."""

    def __init__(self, *, gpu: GpuStatsReader | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.gpu = gpu or GpuStatsReader()
        self.started = time.monotonic()
        self.busy_s = 0.0
        #: Set once the device has loaded (and compiled) its preloaded models and jobs can run.
        self.ready = False
        self.jobs = Counter("sdq_jobs", "Jobs this worker ended, by final status.", ["status"], registry=self.registry)
        self.images = Counter("sdq_images", "Images this worker generated and stored.", registry=self.registry)
        self.pipeline_calls = Counter("sdq_pipeline_calls", "Pipeline calls (batches) run.", registry=self.registry)
        self.busy = Counter(
            "sdq_busy_seconds", "Seconds spent inside pipeline calls (denoising and decoding).", registry=self.registry
        )
        self.batch_images = Histogram(
            "sdq_batch_images", "Images per pipeline call.", buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.batch_jobs = Histogram(
            "sdq_batch_jobs", "Jobs per pipeline call.", buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.phase_seconds = Histogram(
            "sdq_job_phase_seconds",
            "Where a job's time went, per phase.",
            ["phase"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(self))

    def record_cohort(self, *, images: int, jobs: int, seconds: float) -> None:
        """One pipeline call ran (successfully or not) for `seconds`."""
        self.pipeline_calls.inc()
        self.busy.inc(seconds)
        self.busy_s += seconds  # written by the executor thread only
        self.batch_images.observe(images)
        self.batch_jobs.observe(jobs)

    def record_job(self, status: JobStatus, timings: Timings, *, images: int = 0) -> None:
        """A job ended with `status`; its timings feed the phase histograms."""
        self.jobs.labels(status=status.value).inc()
        self.images.inc(images)
        for phase in PHASES:
            value = getattr(timings, f"{phase}_s")
            if value is not None:
                self.phase_seconds.labels(phase=phase).observe(value)

    def busy_fraction(self) -> float:
        """Time denoising ÷ wall time since the worker started."""
        elapsed = time.monotonic() - self.started
        return min(1.0, self.busy_s / elapsed) if elapsed > 0 else 0.0


class _LiveCollector(Collector):
    """Figures read at scrape time: the busy fraction and the GPU's (or `sdq_gpu_available 0`)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "sdq_busy_fraction", "Time denoising ÷ wall time since start.", value=self.metrics.busy_fraction()
        )
        yield GaugeMetricFamily(
            "sdq_worker_ready", "1 once preloaded models are loaded and jobs run.", value=float(self.metrics.ready)
        )
        stats = self.metrics.gpu.read()
        yield GaugeMetricFamily("sdq_gpu_available", "1 when NVML reports a GPU.", value=1.0 if stats else 0.0)
        gauges: dict[str, tuple[str, Callable[[Any], float]]] = {
            "sdq_gpu_utilization_ratio": ("Share of time a kernel ran (NVML).", lambda s: s.utilization_ratio),
            "sdq_gpu_memory_used_bytes": ("Device memory in use.", lambda s: s.memory_used_bytes),
            "sdq_gpu_memory_total_bytes": ("Device memory in all.", lambda s: s.memory_total_bytes),
            "sdq_gpu_temperature_celsius": ("GPU core temperature.", lambda s: s.temperature_c),
        }
        for name, (doc, read) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=["gpu", "name"])
            for gpu in stats:
                value = read(gpu)
                if value is not None:  # a figure this device does not report is left out, not made up
                    family.add_metric([str(gpu.index), gpu.name], float(value))
            yield family


class MetricsExporter(Middleware):
    """Serves `metrics` at http://host:port/metrics while the worker runs (port 0: any free port)."""

    def __init__(self, metrics: WorkerMetrics, *, port: int, host: str = "0.0.0.0") -> None:
        self.metrics = metrics
        self.port = port
        self.host = host
        self._server: Any = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        if self._server is None:  # the worker starts it before its models load (see `gpu_worker.worker`)
            self.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.stop()

    def start(self) -> int:
        """Start serving; returns the port bound."""
        self._server, _ = start_http_server(self.port, addr=self.host, registry=self.metrics.registry)
        self.port = int(self._server.server_port)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
