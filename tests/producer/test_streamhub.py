"""The event streams' shared poller on a real Redis: a stream wakes when its job changed, not on every poll."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from producer import keys
from producer.api.streamhub import TICK_S, StreamHub, Subscription
from producer.streamslots import StreamLimits, StreamSlots

pytestmark = pytest.mark.redis

JOB = "0" * 31 + "1"


async def _waiting(watching: Subscription) -> None:
    while True:  # what a stream's loop does between events
        await watching.next_tick()


def test_a_stream_wakes_when_its_job_changes_and_not_on_the_polls_between(redis_client: redis.Redis) -> None:
    redis_client.hset(keys.job(JOB), mapping={"status": "queued"})
    hub = StreamHub(StreamSlots(redis_client, StreamLimits()))

    async def watch() -> tuple[int, int, str | None]:
        with hub.subscribe({JOB}, None) as watching:
            waiter = asyncio.create_task(_waiting(watching))
            await asyncio.sleep(20 * TICK_S)  # twenty polls of a job that does not change
            idle = watching.wakes
            redis_client.hset(keys.job(JOB), "status", "running")
            await asyncio.sleep(5 * TICK_S)
            waiter.cancel()
            return idle, watching.wakes, watching.latest[JOB][0]

    assert asyncio.run(watch()) == (1, 2, "running")  # the first read, then the change: nothing between


def test_a_stream_with_nothing_new_wakes_at_its_deadline(redis_client: redis.Redis) -> None:
    redis_client.hset(keys.job(JOB), mapping={"status": "queued"})
    hub = StreamHub(StreamSlots(redis_client, StreamLimits()))

    async def watch() -> tuple[float, int]:
        with hub.subscribe({JOB}, None) as watching:
            await watching.next_tick()  # the first read
            started = time.monotonic()
            await asyncio.wait_for(watching.next_tick(deadline=started + 5 * TICK_S), timeout=50 * TICK_S)
            return time.monotonic() - started, watching.wakes

    waited, wakes = asyncio.run(watch())
    assert waited >= 4 * TICK_S and wakes == 2, (waited, wakes)
