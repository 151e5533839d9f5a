"""Work remaining on a queue, read from Dramatiq's Redis keys.

`LLEN dramatiq:<queue>` alone reads 0 while jobs run or wait to retry, so a scaler that trusts it scales busy
workers away. Work remaining here counts every message that still needs a worker: pending in the list, waiting in
the delay queue, fetched by a live worker (running or prefetched), and held by workers that died.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from dramatiq.common import dq_name

#: Dramatiq's key namespace (the broker's default, which sdqueue keeps).
NAMESPACE = "dramatiq"


@dataclass(frozen=True)
class QueueWork:
    """One queue's figures at one moment."""

    queue: str
    pending: int  #: ids in the queue's list, waiting for any worker
    delayed: int  #: in the delay queue (retries, `delay=`), fetched by a live worker or not
    in_flight: int  #: fetched by a live worker: running, or prefetched behind a running job
    dead_held: int  #: fetched by a worker whose heartbeat stopped; maintenance hands them back
    live_workers: int  #: workers holding messages whose heartbeat is fresh
    dead_workers: int  #: workers holding messages whose heartbeat is older than the timeout

    @property
    def work_remaining(self) -> int:
        """Messages that still need a worker: the figure to scale on."""
        return self.pending + self.delayed + self.in_flight + self.dead_held

    def describe(self) -> str:
        """One line for logs and `--dry-run`."""
        return (
            f"queue={self.queue} work={self.work_remaining} (pending={self.pending} delayed={self.delayed}"
            f" in_flight={self.in_flight} dead_held={self.dead_held}) workers_holding={self.live_workers}"
            f" dead_workers={self.dead_workers}"
        )


def read_work(
    client: redis.Redis,
    queues: str | Sequence[str],
    *,
    heartbeat_timeout_s: float,
    namespace: str = NAMESPACE,
    now_s: float | None = None,
) -> QueueWork:
    """The figures of `queues` together (the job queue and the batch queue: the same workers serve both).

    Reads the heartbeats set and one ack set per worker and queue: O(workers), no KEYS/SCAN."""
    names = [queues] if isinstance(queues, str) else list(queues)
    now_ms = (time.time() if now_s is None else now_s) * 1000
    beats: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
        f"{namespace}:__heartbeats__", 0, -1, withscores=True
    )
    pipe = client.pipeline(transaction=False)
    for queue in names:
        pipe.llen(f"{namespace}:{queue}")
        pipe.llen(f"{namespace}:{dq_name(queue)}")
    for worker, _ in beats:
        acks = f"{namespace}:__acks__.{worker.decode()}"
        for queue in names:
            pipe.scard(f"{acks}.{queue}")
            pipe.scard(f"{acks}.{dq_name(queue)}")
    counts = [int(c) for c in pipe.execute()]
    pending, delayed = sum(counts[0 : 2 * len(names) : 2]), sum(counts[1 : 2 * len(names) : 2])
    in_flight = dead_held = live = dead = 0
    per_worker = 2 * len(names)
    for index, (_, beat_ms) in enumerate(beats):
        held_counts = counts[2 * len(names) + index * per_worker : 2 * len(names) + (index + 1) * per_worker]
        held, held_delayed = sum(held_counts[0::2]), sum(held_counts[1::2])
        if not held + held_delayed:
            continue  # idle workers, API processes and the controller itself beat too
        if beat_ms < now_ms - heartbeat_timeout_s * 1000:
            dead += 1
            dead_held += held + held_delayed
        else:
            live += 1
            in_flight += held
            delayed += held_delayed  # a live worker holds these until their eta, then moves them to the queue
    return QueueWork("+".join(names), pending, delayed, in_flight, dead_held, live, dead)
