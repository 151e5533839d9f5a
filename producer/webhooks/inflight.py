"""At most N attempts in flight per receiver, across every `sdq webhooks` process.

A receiver that answers slowly (or trickles its body up to the deadline) holds a delivery thread for the whole
attempt; without a cap, one such receiver with many pending messages takes every thread and every other tenant's
webhooks wait behind it. The cap is kept in Redis, so it holds for the fleet of senders, not one process.

The "endpoint" is the URL's origin (scheme, host, port), not the whole URL: a receiver that trickles does so on
every path, and a cap per URL would let `?job=1`, `?job=2`, … take every thread again.
"""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlsplit

import redis

from .. import keys

# Take a slot unless `limit` live ones are held. Slots are members scored by when they lapse, so a sender killed
# mid-attempt (SIGKILL, OOM) frees its slot after `hold`, never holds it for good. Returns 1 when taken.
_ENTER = """
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])
if redis.call("ZSCORE", KEYS[1], ARGV[3]) then return 1 end
if redis.call("ZCARD", KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call("ZADD", KEYS[1], ARGV[4], ARGV[3])
redis.call("PEXPIRE", KEYS[1], ARGV[5])
return 1
"""


def endpoint_of(url: str) -> str:
    """The origin a URL's in-flight attempts are counted against (`https://host:443`)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def _slots_key(url: str) -> str:
    digest = hashlib.sha256(endpoint_of(url).encode()).hexdigest()[:32]
    return keys.endpoint_in_flight(digest)


class EndpointSlots:
    """Counts the attempts in flight to each endpoint and refuses one past `limit`."""

    def __init__(self, client: redis.Redis, *, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the per-endpoint in-flight limit must be at least 1, not {limit}")
        self.client = client
        self.limit = limit
        self._enter = client.register_script(_ENTER)

    def enter(self, url: str, msg_id: str, *, hold_s: float) -> bool:
        """Take a slot for an attempt of `msg_id` to `url`, held at most `hold_s`; False when all are taken."""
        now = time.time()
        hold_ms = max(1, int(hold_s * 1000))
        args: list[str | int] = [repr(now), self.limit, msg_id, repr(now + hold_s), hold_ms]
        return bool(self._enter(keys=[_slots_key(url)], args=args))

    def leave(self, url: str, msg_id: str) -> None:
        """Give the slot of `msg_id` back."""
        self.client.zrem(_slots_key(url), msg_id)

    def in_flight(self, url: str) -> int:
        """How many live slots `url`'s endpoint holds now."""
        key = _slots_key(url)
        return int(self.client.zcount(key, repr(time.time()), "+inf"))
