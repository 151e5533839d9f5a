"""How many event streams a caller holds open, counted in Redis so that every API process and replica agrees.

Each holder (an API key, or in open mode the client's address) has one sorted set of its open streams, scored by
the Redis time of each stream's last heartbeat. A stream takes a slot when it opens (refused at the cap), its API
process refreshes every slot it holds each `heartbeat_s` (one pipelined round trip for all of them), and frees
its slot when it ends. A process that crashed refreshes nothing: its slots are stale after `STALE_HEARTBEATS`
heartbeats and are pruned by the next stream that asks for one, so a crash cannot leak slots. Times come from
Redis (`TIME`), not from each API host's clock. The refresh also reads the key's `revoked` field, so a revoked key's
streams learn of it within a heartbeat.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from . import keys
from .errors import TooManyStreamsError

#: A slot whose stream missed this many heartbeats belongs to a process that is gone.
STALE_HEARTBEATS = 3

# acquire(KEYS=[slots], ARGV=[stream id, stale_s, limit (0 = none), ttl_s]) -> {admitted 0|1, streams open}
_ACQUIRE = """
local t = redis.call("TIME")
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - tonumber(ARGV[2]))
local open = redis.call("ZCARD", KEYS[1])
local limit = tonumber(ARGV[3])
if limit > 0 and open >= limit then return {0, open} end
redis.call("ZADD", KEYS[1], now, ARGV[1])
redis.call("EXPIRE", KEYS[1], ARGV[4])
return {1, open + 1}
"""

# refresh(KEYS=[slots, api key hash or ""], ARGV=[stream id, ttl_s]) -> 1 while the key is live, 0 once revoked
# (or deleted). Re-adds a slot pruned while its process stalled: the stream is still open.
_REFRESH = """
local t = redis.call("TIME")
redis.call("ZADD", KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[1])
redis.call("EXPIRE", KEYS[1], ARGV[2])
if KEYS[2] == "" then return 1 end
local revoked = redis.call("HGET", KEYS[2], "revoked")
if revoked == false or revoked == "1" then return 0 end
return 1
"""


@dataclass(frozen=True)
class StreamLimits:
    """How long and how many event streams: `max_per_holder` open at once (0 = no cap), each at most
    `max_duration_s` (then the client resumes with `Last-Event-ID`); slots and keys are re-checked every
    `heartbeat_s`."""

    max_per_holder: int = 16
    max_duration_s: float = 300.0
    heartbeat_s: float = 2.0

    @property
    def stale_s(self) -> float:
        """A slot not refreshed for this long is pruned."""
        return self.heartbeat_s * STALE_HEARTBEATS

    @property
    def ttl_s(self) -> int:
        """The TTL of a holder's set: it outlives every refresh, and vanishes once its last stream is stale."""
        return max(1, int(self.stale_s) + 1)


@dataclass(frozen=True)
class Lease:
    """One open stream's slot; `key_id` is None in open mode (nothing to revoke)."""

    holder: str
    stream_id: str
    key_id: str | None


class StreamSlots:
    """Takes, refreshes and frees stream slots in Redis (synchronous calls: the API runs them in its thread pool)."""

    def __init__(self, client: redis.Redis, limits: StreamLimits) -> None:
        self.client = client
        self.limits = limits
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)

    def acquire(self, holder: str, key_id: str | None) -> Lease:
        """A slot for a new stream of `holder`; raises `TooManyStreamsError` at the cap."""
        lease = Lease(holder, secrets.token_hex(8), key_id)
        limit = self.limits.max_per_holder
        admitted, open_now = self._acquire(
            keys=[keys.stream_slots(holder)], args=[lease.stream_id, self.limits.stale_s, limit, self.limits.ttl_s]
        )
        if not int(admitted):
            # A slot frees when a stream ends, at the latest when it reaches `max_duration_s`; a crashed
            # holder's slots are gone after `stale_s`. The latter is the useful hint for a client retrying.
            raise TooManyStreamsError(
                f"this caller already has {int(open_now)} event streams open, the limit"
                f" (SDQ_MAX_STREAMS_PER_KEY={limit}); close one or follow several jobs on one GET /v1/events stream",
                retry_after_s=self.limits.stale_s,
            )
        return lease

    def refresh(self, leases: Sequence[Lease]) -> list[bool]:
        """Heartbeat every lease in one round trip; for each, whether its key is still live (not revoked)."""
        if not leases:
            return []
        pipe = self.client.pipeline(transaction=False)
        for lease in leases:
            self.queue_refresh(pipe, lease)
        return [bool(int(live)) for live in pipe.execute()]

    def queue_refresh(self, pipe: redis.client.Pipeline, lease: Lease) -> None:
        """Add the lease's heartbeat to `pipe` (its result: 1 while the key is live, 0 once revoked)."""
        key = keys.api_key(lease.key_id) if lease.key_id is not None else ""
        self._refresh(
            keys=[keys.stream_slots(lease.holder), key], args=[lease.stream_id, self.limits.ttl_s], client=pipe
        )

    def release(self, lease: Lease) -> None:
        """Free the lease's slot."""
        self.client.zrem(keys.stream_slots(lease.holder), lease.stream_id)


def holder_of(key_id: str | None, address: str | None) -> str:
    """Whose streams these are: the API key, else (open mode) the client's address."""
    return f"key:{key_id}" if key_id is not None else f"addr:{address or 'unknown'}"
