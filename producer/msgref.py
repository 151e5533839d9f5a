"""Which queue message carries a job, without reading every message: the lost-message check costs a slice of the
line per sweep, not a scan of the whole queue (producer/controller/janitor.py).

A job's first message has the job id as its Redis message id (lua/create.lua, lua/batch.lua, `JobService.prepare`).
Every later enqueue (a worker's re-send, Dramatiq's retry, a delayed message made ready) gets a fresh id from
Dramatiq; the `MessageRef` middleware, on every broker `make_broker` builds, notes it on the job's record
(`rmsg`). `unsent` then tells, per job, whether any queue still holds its message: one HMGET and a few HEXISTS.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from dramatiq import Broker, Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from dramatiq.middleware import Middleware

from .scripts import lua_script

log = logging.getLogger(__name__)


class MessageRef(Middleware):
    """Notes on a job's record the Redis id of the message that carries it, when that is not the job id; only for
    messages of `actors` (the job actors, `producer.broker`)."""

    def __init__(self, actors: frozenset[str]) -> None:
        self.actors = actors
        self._scripts: dict[int, Any] = {}

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if message.actor_name not in self.actors or not isinstance(broker, RedisBroker) or not message.args:
            return
        payload = message.args[0]
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        redis_id = message.options.get("redis_message_id")
        if not isinstance(job_id, str) or not redis_id or redis_id == job_id:
            return
        script = self._scripts.get(id(broker.client))
        if script is None:
            script = self._scripts[id(broker.client)] = broker.client.register_script(lua_script("msgref"))
        try:
            script(keys=[], args=[job_id, redis_id])
        except redis.RedisError as exc:  # the janitor's grace period covers it: at worst a duplicate message
            log.warning("job %s: could not note its message %s: %s", job_id, redis_id, exc)


def message_hashes(queues: Sequence[str], namespace: str) -> list[str]:
    """The hashes that hold the bodies of `queues`' messages: each queue's and its delay queue's."""
    return [f"{namespace}:{name}.msgs" for queue in queues for name in (queue, dq_name(queue))]


def unsent(client: redis.Redis, job_ids: Sequence[str], queues: Sequence[str], namespace: str) -> list[str]:
    """Those of `job_ids` that are queued and that no message of `queues` carries (one round trip)."""
    if not job_ids:
        return []
    script = client.register_script(lua_script("unsent"))
    found = script(keys=message_hashes(queues, namespace), args=list(job_ids))
    return [i.decode() if isinstance(i, bytes) else str(i) for i in found]


@dataclass(frozen=True)
class LineCounts:
    """One atomic snapshot of what the lost-message check compares (lua/deficit.lua)."""

    queued: int
    running: int
    stale: int  #: jobs canceled in line whose message may still be on a queue
    messages: int  #: message bodies the queues hold (pending, fetched or delayed)

    @property
    def deficit(self) -> int:
        """How many queued or running jobs at least have no message: every such job has one until its worker
        acks it, so with nothing lost this is <= 0. Messages nobody counts (a cancel's, where the stale set
        forgot it; a retry in flight) can hide a loss until they are gone, never invent one."""
        return self.queued + self.running - (self.messages - min(self.stale, self.messages))


def line_counts(client: redis.Redis, queues: Sequence[str], namespace: str) -> LineCounts:
    """Count the line's jobs and the queues' messages (one round trip, O(1))."""
    found = client.register_script(lua_script("deficit"))(keys=message_hashes(queues, namespace), args=[])
    queued, running, stale, messages = (int(x) for x in found)
    return LineCounts(queued=queued, running=running, stale=stale, messages=messages)


def prune_stale(client: redis.Redis, queues: Sequence[str], namespace: str, *, cursor: int, count: int) -> int:
    """One step of a walk over the jobs canceled in line, dropping those whose message is gone; returns the next
    cursor (0: the walk is done)."""
    step = client.register_script(lua_script("stale"))(keys=message_hashes(queues, namespace), args=[cursor, count])
    return int(step[0])
