"""`sdq worker`: one process that pulls jobs from Redis and runs them on one device."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

import redis
import torch
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.middleware import CurrentMessage, Retries, TimeLimit

from producer.broker import BATCH_ACTOR, GENERATE_ACTOR, send
from producer.holdings import clear_holdings, report_holdings
from producer.jobs import JobMessage
from producer.runtime import open_backends
from storage import open_store

from .actors import declare_generate
from .device import Device, DeviceProcess
from .device.local import LocalDevice
from .device.select import resolve_device
from .executor import GpuExecutor
from .gpu_stats import GpuStatsReader, cuda_index
from .heartbeat import BrokerHeartbeat
from .metrics import MetricsExporter, WorkerMetrics
from .middleware import BusyClock, IdleShutdown, SpotWatcher, StatusReporter
from .middleware.drain import hand_back, stop_fetching
from .models import LoadedModels
from .notices import Interruption, Notice, open_notice_source
from .retire import RetireError, retire
from .runner import JobRunner
from .settings import WorkerSettings
from .usage import usage_reporter

log = logging.getLogger(__name__)


def run_worker(settings: WorkerSettings, *, stop: threading.Event | None = None, device: Device | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set); running jobs get `shutdown_timeout_s` to finish. Returns 0.

    `device` (closed on return) is what `open_device` would make, started earlier by the caller.
    """
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    # The device process boots (imports torch and diffusers, preloads models) while this one connects to Redis.
    device = device or open_device(settings)
    try:
        return _run(settings, device, stop or threading.Event())
    finally:
        device.close()


def open_device(settings: WorkerSettings) -> Device:
    """The worker's device: a device process (`SDQ_DEVICE_PROCESS`, the default), or models in this process."""
    if settings.device_process:
        return DeviceProcess(settings)
    models = LoadedModels.from_settings(settings, device=resolve_device(settings.device))
    return LocalDevice(models, preload=settings.preload_models)


def _holdings_reporter(settings: WorkerSettings, device: Device) -> Callable[[RedisBroker], None]:
    def report(broker: RedisBroker) -> None:
        report_holdings(broker.client, settings.worker_id, device.holdings(), ttl_s=settings.heartbeat_timeout_s)

    return report


def _run(settings: WorkerSettings, device: Device, stop: threading.Event) -> int:
    gpu = GpuStatsReader(visible_devices=settings.cuda_visible_devices, device_index=cuda_index(settings.device))
    metrics = WorkerMetrics(gpu=gpu)
    middleware = [
        TimeLimit(),
        Retries(),
        CurrentMessage(),
        # On the heartbeat's clock: what this worker holds (GET /v1/models), expiring with its heartbeat.
        BrokerHeartbeat(interval_s=settings.heartbeat_timeout_s / 4, on_beat=_holdings_reporter(settings, device)),
    ]
    middleware.append(usage_reporter(settings))
    exporter = None
    if settings.metrics_port is not None:
        exporter = MetricsExporter(metrics, port=settings.metrics_port, host=settings.metrics_host)
        middleware.append(exporter)
    # Scale to zero: an idle worker exits (and retires its VM); a spot notice drains it and hands its job off.
    clock = BusyClock()  # one busy clock: the idle shutdown acts on the idle time the status report shows
    middleware.append(clock)
    idle = IdleShutdown(settings.idle_timeout_s, stop, clock) if settings.idle_timeout_s > 0 else None
    interruption = Interruption()
    notices = open_notice_source(settings)
    if idle is not None:
        middleware.append(idle)
    middleware.append(
        StatusReporter(
            settings.worker_id,
            hostname=socket.gethostname(),
            instance_type=settings.instance_type,
            device_name=lambda: device.name,
            gpu=gpu,
            clock=clock,
            idle=idle,
            interval_s=settings.status_interval_s,
        )
    )
    if notices is not None:
        middleware.append(SpotWatcher(notices, interruption, stop, poll_interval_s=settings.spot_poll_interval_s))
    with open_backends(settings, middleware=middleware) as backends, contextlib.ExitStack() as cleanup:
        if exporter is not None:
            # Serving before the device is ready, so health checks pass while models download, load and compile
            # (minutes); `sdq_worker_ready` says when jobs run. Stopped however this ends (idempotent).
            exporter.start()
            cleanup.callback(exporter.stop)
        objects = open_store(settings.resolved_storage_url, credentials=settings.storage_credentials())
        # Before taking jobs: fetched into the NVMe cache, loaded (and compiled, if asked) once, never on a job.
        device.ready()
        metrics.ready = True

        def resend(message: JobMessage, delay_s: float) -> None:
            # Back onto the queue it came from, so a batch job keeps its lower priority after a hand-off or retry.
            current = CurrentMessage.get_current_message()
            batch = current is not None and q_name(current.queue_name) == settings.batch_queue
            queue, actor = (settings.batch_queue, BATCH_ACTOR) if batch else (settings.queue, GENERATE_ACTOR)
            # No delay: straight onto the queue (a delay of 0 would still take the detour through the delay queue).
            send(backends.broker, queue, message, delay_ms=int(delay_s * 1000) if delay_s > 0 else None, actor=actor)

        # One executor owns the device; the worker threads feed it, and it runs their jobs in cohorts.
        executor = GpuExecutor(
            device, max_images=settings.batch_max, wait_ms=settings.batch_wait_ms, metrics=metrics
        ).start()
        checkpoints = (
            open_store(settings.checkpoint_storage_url, credentials=settings.storage_credentials())
            if settings.checkpoint_storage_url
            else objects
        )
        runner = JobRunner(
            settings, backends.store, objects, executor, resend, interruption=interruption, checkpoints=checkpoints
        )
        declare_generate(backends.broker, runner, settings)
        # Interactive jobs first, fleet-wide: batch messages are fetched only while no interactive one waits.
        backends.broker.yield_queue(settings.batch_queue, to=settings.queue)
        worker = Worker(
            backends.broker,
            queues={settings.queue, settings.batch_queue},
            worker_threads=settings.worker_threads,
            worker_timeout=int(settings.poll_interval_s * 1000),
        )
        # Dramatiq counts running messages in its prefetch and defaults to 2 × threads: hold only what runs, plus
        # SDQ_PREFETCH, since whatever a worker holds waits for it (and for the heartbeat timeout if it dies).
        worker.queue_prefetch = settings.worker_threads + settings.prefetch
        worker.delay_prefetch = 16

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: draining", signum)
            # Jobs that cannot finish within the shutdown timeout checkpoint and hand off, as on a spot notice
            # (a Kubernetes eviction or a cloud's ACPI shutdown arrives as SIGTERM).
            deadline = time.time() + settings.shutdown_timeout_s
            interruption.set(Notice("signal", "terminate", deadline, detail=f"signal {signum}"))
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        # Dramatiq's own CLI emits this; without it TimeLimit never starts its watcher and the actors' time limit
        # (the backstop behind the runner's own job timeout) never fires.
        backends.broker.emit_after("process_boot")
        worker.start()
        log.info("worker %s on %s, queue %s", settings.worker_id, device.name, settings.queue)
        stop.wait()
        if interruption.is_set():
            # Dramatiq stops its worker threads before its consumers, which keep fetching meanwhile: a job handed
            # off now would come straight back to this draining worker. Stop fetching and return what is held.
            stop_fetching(worker)
            hand_back(worker)
        backends.broker.wake_consumers()  # idle consumers wait on the doorbell: have them see the stop now
        worker.stop(timeout=int(settings.shutdown_timeout_s * 1000))
        executor.shutdown()
        with contextlib.suppress(redis.RedisError):
            clear_holdings(backends.broker.client, settings.worker_id)
    if idle is not None and idle.idled:
        try:
            log.info("retired: %s", retire(settings))
        except RetireError as exc:  # still exit 0: the worker did its part; the group's own scale-in can follow
            log.error("could not retire this machine: %s", exc)
    return 0
