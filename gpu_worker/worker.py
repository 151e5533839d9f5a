"""`sdq worker`: one process that pulls jobs from Redis and runs them on one device."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import torch
from dramatiq import Worker
from dramatiq.middleware import Retries, TimeLimit

from producer.broker import send
from producer.jobs import JobMessage
from producer.runtime import open_backends
from storage import open_store

from .actors import declare_generate
from .device import resolve_device
from .heartbeat import BrokerHeartbeat
from .models import LoadedModels
from .runner import JobRunner
from .settings import WorkerSettings

log = logging.getLogger(__name__)


def run_worker(settings: WorkerSettings, *, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set); running jobs get `shutdown_timeout_s` to finish. Returns 0."""
    stop = stop or threading.Event()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    middleware = [TimeLimit(), Retries(), BrokerHeartbeat(interval_s=settings.heartbeat_timeout_s / 4)]
    with open_backends(settings, middleware=middleware) as backends:
        objects = open_store(settings.resolved_storage_url)
        models = LoadedModels(
            cache_dir=settings.resolved_model_cache_dir,
            device=resolve_device(settings.device),
            capacity=settings.max_loaded_models,
        )

        def resend(message: JobMessage, delay_s: float) -> None:
            send(backends.broker, settings.queue, message, delay_ms=int(delay_s * 1000))

        runner = JobRunner(settings, backends.store, objects, models, resend)
        declare_generate(backends.broker, runner, settings)
        worker = Worker(
            backends.broker,
            queues={settings.queue},
            worker_threads=settings.worker_threads,
            worker_timeout=int(settings.poll_interval_s * 1000),
        )
        # Dramatiq counts running messages in its prefetch and defaults to 2 × threads: hold only what runs, plus
        # SDQ_PREFETCH, since whatever a worker holds waits for it (and for the heartbeat timeout if it dies).
        worker.queue_prefetch = settings.worker_threads + settings.prefetch
        worker.delay_prefetch = 16

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: draining", signum)
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        worker.start()
        log.info("worker %s on %s, queue %s", settings.worker_id, models.device, settings.queue)
        stop.wait()
        worker.stop(timeout=int(settings.shutdown_timeout_s * 1000))
    return 0
