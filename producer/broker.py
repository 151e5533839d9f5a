"""The Dramatiq side of the producer: one broker per process, and sending a job by actor name.

The producer never imports the worker's actor: it sends a message addressed to `GENERATE_ACTOR` on the job
queue, so `import producer` stays free of torch and diffusers.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from .jobs import JobMessage

#: Name of the worker's generation actor; the contract between producer and worker.
GENERATE_ACTOR = "generate"


def make_broker(
    client: redis.Redis, *, heartbeat_timeout_s: float, middleware: Sequence[Middleware] = ()
) -> RedisBroker:
    """A Redis broker on `client`, with only the middleware given (Dramatiq's defaults are chosen per process)."""
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=client, middleware=list(middleware), heartbeat_timeout=int(heartbeat_timeout_s * 1000)
    )


def job_message(queue: str, payload: JobMessage) -> Message[object]:
    """The Dramatiq message that asks a worker to run one job."""
    return Message(
        queue_name=queue,
        actor_name=GENERATE_ACTOR,
        args=(payload.model_dump(mode="json"),),
        kwargs={},
        options={},
        message_id=payload.job_id,
    )


def send(broker: RedisBroker, queue: str, payload: JobMessage, *, delay_ms: int | None = None) -> None:
    """Enqueue one job message (declaring the queue on first use)."""
    broker.declare_queue(queue)
    broker.enqueue(job_message(queue, payload), delay=delay_ms)
