"""Waking idle consumers the moment a message is enqueued, instead of at their next poll.

Dramatiq's Redis consumers poll: after an empty fetch a consumer sleeps, backing off up to its idle timeout (the
worker's SDQ_POLL_INTERVAL_S), so a job sent to a long-idle worker waited up to that long before anyone looked.
Polling faster is no cure: every poll takes the denoising thread's GIL for a moment.

So every enqueue also rings a doorbell: a PUBLISH on the queue's wake channel (`<namespace>:<queue>.wake`), done
inside the same Lua script for the jobs the API creates (lua/create.lua, lua/batch.lua) and by `Doorbell`, a broker
middleware, for Dramatiq's own enqueues (resends, retries, delayed messages coming due). `WakingRedisBroker` hands
out consumers that, once their queue is empty, wait on that doorbell (one listener thread per process, blocked on
its socket) for at most the poll interval, then fetch. Idle, a consumer still fetches once per poll interval, which
covers a missed ring (Redis restarted, listener reconnecting); busy, nothing changes: a consumer with messages in
hand never waits on the bell. Delay queues keep Dramatiq's own polling: their consumer thread also releases the
delayed messages it holds as they come due, which a wait for the bell would hold up.

A queue can also yield to another (`WakingRedisBroker.yield_queue`): its consumer fetches only while the other
queue has no message waiting. The worker's batch queue yields to its interactive queue, so the fleet runs every
waiting interactive job before the next batch job, as the queue position says (`producer.line`). Ranking
prefetched messages by actor priority alone is not enough: when a thread frees up, the interactive consumer's
next fetch is a round trip behind the batch consumer's, and measured on one worker (2 threads) half the jobs run
then were batch jobs while 600 interactive ones waited.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

import redis
from dramatiq import Message
from dramatiq.broker import Broker, Consumer
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)

#: Suffix of a queue key that names its wake channel (a queue key is `<namespace>:<queue name>`).
WAKE_SUFFIX = ".wake"
#: While Redis stays away, the listener says so once per this long (it retries every second).
RECONNECT_WARN_S = 60.0
#: How long a yielding consumer waits before it looks at the queue it yields to again (one LLEN per wait).
YIELD_WAIT_S = 0.05


def wake_channel(queue_key: str) -> str:
    """The pub/sub channel rung when a message lands on the Redis list `queue_key`."""
    return queue_key + WAKE_SUFFIX


class Doorbell(Middleware):
    """Rings the queue's wake channel after each Dramatiq enqueue (best effort: the message is already queued)."""

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if delay or not isinstance(broker, RedisBroker):  # a delayed message: its delay queue polls (see above)
            return
        try:
            broker.client.publish(wake_channel(f"{broker.namespace}:{message.queue_name}"), "1")
        except redis.RedisError as exc:  # consumers still poll: the message is picked up a little later
            log.debug("doorbell for %s not rung: %s", message.queue_name, exc)


class WakingRedisBroker(RedisBroker):
    """A Redis broker whose consumers wait for the doorbell instead of polling with backoff while idle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._bells: dict[str, threading.Event] = {}
        self._yields: dict[str, str] = {}
        self._listener: _Listener | None = None
        self._lock = threading.Lock()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if q_name(queue_name) != queue_name:  # a delay queue: Dramatiq's polling (see above)
            return super().consume(queue_name, prefetch, timeout)
        with self._lock:
            bell = self._bells.setdefault(queue_name, threading.Event())
            if self._listener is None:
                self._listener = _Listener(self.client, f"{self.namespace}:", self._bells)
                self._listener.start()
        ahead = self._yields.get(queue_name)
        return _WakingConsumer(
            self, queue_name, prefetch, timeout, bell, ahead_key=f"{self.namespace}:{ahead}" if ahead else None
        )

    def yield_queue(self, queue_name: str, *, to: str) -> None:
        """Consumers of `queue_name` made from now on fetch only while queue `to` has no message waiting."""
        self._yields[queue_name] = to

    def wake_consumers(self) -> None:
        """Cut every idle consumer's wait short (a stopping worker's consumers then notice at once)."""
        for bell in list(self._bells.values()):
            bell.set()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener.join(timeout=5.0)  # it leaves within a second: its wait for a ring times out
        super().close()


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting on the doorbell (up to its timeout) after a fetch found nothing."""

    def __init__(
        self,
        broker: RedisBroker,
        queue_name: str,
        prefetch: int,
        timeout: int,
        bell: threading.Event,
        *,
        ahead_key: str | None = None,
    ):
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._bell = bell
        self._empty = False
        self._ahead_key = ahead_key

    def __next__(self) -> Any:
        if self._empty:
            self._bell.wait(self.timeout / 1000)
            # Dramatiq sleeps after an empty fetch, backing off by its miss count: the wait above replaces that
            # backoff, so its own sleep stays at its first step (a few ms).
            self.misses = 0
        self._bell.clear()  # before the fetch: a ring from now on makes the next wait return at once
        full = not self.message_cache and self.outstanding_message_count >= self.prefetch
        if not full and not self.message_cache and self._yielding():
            self._empty = False
            self._bell.wait(YIELD_WAIT_S)  # cut short when a stopping worker rings every bell
            return None
        message = super().__next__()  # type: ignore[no-untyped-call]
        # Full (no fetch made): Dramatiq's own backoff paces the consumer until a running message is acked.
        self._empty = message is None and not full
        return message

    def _yielding(self) -> bool:
        """Whether the queue this one yields to has messages waiting (then this one fetches nothing now)."""
        if self._ahead_key is None:
            return False
        try:
            return int(self.broker.client.llen(self._ahead_key)) > 0
        except redis.RedisError:  # the fetch that follows meets the same error and reports it as Dramatiq does
            return False


class _Listener(threading.Thread):
    """Sets the bell of a queue whenever its wake channel is rung; reconnects after Redis errors."""

    def __init__(self, client: redis.Redis, prefix: str, bells: dict[str, threading.Event]) -> None:
        super().__init__(name="doorbell", daemon=True)
        self.client = client
        self.prefix = prefix
        self.bells = bells
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        down_since: float | None = None  # when Redis went away (the listener retries every second meanwhile)
        warned_at = 0.0
        while not self._stopping.is_set():
            pubsub = cast(Any, self.client).pubsub(ignore_subscribe_messages=True)  # typed in some redis-py releases
            subscribed: set[str] = set()
            try:
                while not self._stopping.is_set():
                    # Only the channels of the queues this process consumes (not a pattern of every queue's:
                    # each submission would wake the webhook sender's listener too). A queue consumed later is
                    # subscribed within a second; its consumer fetches first and polls until then.
                    if wanted := {wake_channel(self.prefix + queue) for queue in list(self.bells)} - subscribed:
                        pubsub.subscribe(*wanted)
                        subscribed |= wanted
                        if down_since is not None:
                            log.info("doorbell listener reconnected after %.0f s", time.monotonic() - down_since)
                            down_since = None
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._ring(message["channel"])
            except Exception as exc:  # best effort: Redis down, or the client closed under us at shutdown
                if self._stopping.is_set():
                    return
                # Said when Redis goes away, then once a minute while it stays away: not every retry.
                now = time.monotonic()
                if down_since is None:
                    down_since = warned_at = now
                    log.warning("doorbell listener lost Redis, reconnecting (workers poll meanwhile): %s", exc)
                elif now - warned_at >= RECONNECT_WARN_S:
                    warned_at = now
                    log.warning("doorbell listener still reconnecting after %.0f s: %s", now - down_since, exc)
                for bell in list(self.bells.values()):  # something may have been enqueued meanwhile: look
                    bell.set()
                self._stopping.wait(1.0)
            finally:
                try:
                    pubsub.close()
                except Exception:  # already torn down with its client
                    log.debug("doorbell pubsub close failed", exc_info=True)

    def _ring(self, channel: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        queue = name[len(self.prefix) : -len(WAKE_SUFFIX)]
        bell = self.bells.get(queue)
        if bell is not None:
            bell.set()
