"""Taking a running Dramatiq worker off the queue: stop fetching, and hand back what it holds but has not started.

Shared by the idle and spot middleware. A held message is one in the worker's work queue (fetched, not started)
or in a consumer's delay queue (a retry waiting for its time). Handing one back is Dramatiq's own `requeue`: the
message moves from this worker's ack set back to its queue at once, where any other worker can take it; nothing
counts it as an attempt, since no job was claimed.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from dramatiq.common import iter_queue

log = logging.getLogger(__name__)


def stop_fetching(worker: Any, *, timeout_s: float = 2.0) -> None:
    """Make every consumer of `worker` stop fetching at once (running jobs go on).

    Dramatiq's own `pause` closes and restarts each consumer after a 3 s delay; setting the prefetch to 0 stops
    fetching at the next poll instead. A fetch already under way still lands in the consumer's cache and moves on
    to the work queue: wait (up to `timeout_s`) until the caches are empty, so `hand_back` sees everything.
    """
    consumers = list(worker.consumers.values())
    for consumer in consumers:
        consumer.prefetch = 0
        if consumer.consumer is not None:
            consumer.consumer.prefetch = 0
    deadline = time.monotonic() + timeout_s
    time.sleep(worker.worker_timeout / 1000)  # one poll: a fetch that was under way returns
    while any(getattr(c.consumer, "message_cache", None) for c in consumers) and time.monotonic() < deadline:
        time.sleep(0.01)


def resume_fetching(worker: Any) -> None:
    """Undo `stop_fetching`."""
    for name, consumer in worker.consumers.items():
        consumer.prefetch = worker.delay_prefetch if name.endswith(".DQ") else worker.queue_prefetch
        if consumer.consumer is not None:
            consumer.consumer.prefetch = consumer.prefetch


def holds_messages(worker: Any) -> bool:
    """Whether `worker` holds messages it has fetched: running, waiting for a thread, or delayed."""
    if worker.work_queue.unfinished_tasks:
        return True
    return any(consumer.delay_queue.unfinished_tasks for consumer in worker.consumers.values())


def hand_back(worker: Any) -> int:
    """Requeue every message `worker` holds but has not started; returns how many. Call after `stop_fetching`."""
    by_queue: dict[str, list[Any]] = defaultdict(list)
    for item in iter_queue(worker.work_queue):
        by_queue[item.message.queue_name].append(item.message)
        worker.work_queue.task_done()
    for name, consumer in worker.consumers.items():
        for item in iter_queue(consumer.delay_queue):
            by_queue[name].append(item.message)
            consumer.delay_queue.task_done()
    count = 0
    for queue_name, messages in by_queue.items():
        worker.consumers[queue_name].requeue_messages(messages)
        count += len(messages)
    if count:
        log.info("handed back %d held message(s)", count)
    return count


def hand_back_one(worker: Any, message: Any) -> None:
    """Requeue one message a worker thread picked up but must not run (it is then acked as a no-op)."""
    worker.consumers[message.queue_name].requeue_messages([message])
