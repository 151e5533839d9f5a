"""`sdq webhooks`: the CPU process that dispatches job events and delivers webhooks (never on a GPU worker)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import FrameType

from dramatiq import Worker
from dramatiq.middleware import Retries, TimeLimit

from ..runtime import open_backends
from .delivery import Deliverer, RetryPolicy, declare_deliver, send_delivery
from .dispatch import Dispatcher
from .inflight import EndpointSlots
from .keyring import Keyring, server_secrets
from .log import DeliveryLog
from .settings import WebhookSettings
from .ssrf import Resolver, UrlPolicy, system_resolver

log = logging.getLogger(__name__)


def url_policy(settings: WebhookSettings) -> UrlPolicy:
    """The SSRF policy the settings describe."""
    return UrlPolicy.from_entries(settings.webhook_allow, https_only=settings.webhook_https_only)


def run_webhooks(
    settings: WebhookSettings,
    *,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    resolver: Resolver = system_resolver,
    time_limit_s: float | None = None,
) -> int:
    """Run the dispatcher and the delivery worker until SIGTERM/SIGINT (or `stop`); returns 0. `time_limit_s`
    overrides the actor's time limit (default: the attempt deadline plus a grace; tests shorten it)."""
    stop = stop or threading.Event()
    with open_backends(settings, middleware=[TimeLimit(), Retries()]) as backends:
        deliveries = DeliveryLog(backends.client, ttl_s=settings.job_ttl_s + 24 * 3600)
        secrets = server_secrets([s.get_secret_value() for s in settings.webhook_secrets], settings.data_dir)
        queue = settings.webhook_queue

        def send(msg_id: str, delay_s: float = 0.0, ticket: str | None = None) -> None:
            send_delivery(backends.broker, queue, msg_id, delay_s, ticket)

        retry = RetryPolicy(
            settings.webhook_retry_schedule_s, settings.webhook_jitter, settings.webhook_max_retry_after_s
        )
        deliverer = Deliverer(
            deliveries,
            Keyring(backends.client, secrets),
            url_policy(settings),
            retry,
            send,
            timeout_s=settings.webhook_timeout_s,
            resolver=resolver,
            slots=EndpointSlots(backends.client, limit=settings.webhook_max_in_flight_per_endpoint),
            time_limit_s=time_limit_s,
        )
        declare_deliver(backends.broker, deliverer, queue)
        backends.broker.declare_queue(queue)
        dispatcher = Dispatcher(
            backends.client,
            backends.store,
            deliveries,
            send,
            consumer=f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}",
            progress_interval_s=settings.webhook_progress_interval_s,
        )
        # A delivery's message rings the queue's doorbell (producer.doorbell), so an idle consumer wakes for it at
        # once; the timeout only bounds how often an idle one fetches anyway (and when a due retry is seen):
        # 100 ms cost an idle `sdq webhooks` 2 % of a core, 1 s costs 0.3 %.
        worker = Worker(backends.broker, queues={queue}, worker_threads=settings.webhook_threads, worker_timeout=1000)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        # Dramatiq's own CLI emits this; without it TimeLimit never starts its watcher and no time limit fires.
        backends.broker.emit_after("process_boot")
        worker.start()
        thread = threading.Thread(target=dispatcher.run, args=(stop,), name="sdq-webhook-dispatch", daemon=True)
        thread.start()
        log.info("webhooks: dispatching events, delivering on queue %s", queue)
        if ready is not None:
            ready.set()
        stop.wait()
        thread.join(timeout=5)
        worker.stop(timeout=int(settings.webhook_timeout_s * 1000) + 5000)
    return 0
