"""Dramatiq's queue maintenance, run on a clock by the controller instead of by chance inside workers.

Maintenance moves the messages of workers whose heartbeat is older than the timeout back to their queue (and
expires old dead letters). Dramatiq runs it on 1 command in 1000, inside workers only: with every worker scaled
to zero, nothing would ever hand a dead worker's jobs back. The controller runs the broker's own dispatch script
with the maintenance flag set, every quarter heartbeat timeout, so they return within 1.25 × the timeout.
"""

from __future__ import annotations

from collections.abc import Iterable

from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name


def run_maintenance(broker: RedisBroker, queues: Iterable[str]) -> int:
    """Requeue dead workers' messages on each queue and its delay queue; returns how many calls were made."""
    calls = 0
    for queue in queues:
        for name in (queue, dq_name(queue)):
            # `qsize` is the only command that changes nothing else; the flag makes the script run maintenance.
            broker.scripts["dispatch"](
                keys=[broker.namespace],
                args=[
                    "qsize",
                    current_millis(),
                    name,
                    broker.broker_id,
                    broker.heartbeat_timeout,
                    broker.dead_message_ttl,
                    1,
                    broker._max_unpack_size(),  # type: ignore[no-untyped-call]
                ],
            )
            calls += 1
    return calls
