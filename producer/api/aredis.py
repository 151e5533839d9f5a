"""The API's asyncio Redis client, packing commands in C (hiredis) the way redis-py's sync client already does.

redis-py's asyncio connections always pack commands in Python, at a few microseconds per argument; the job-create
script takes some 30 arguments, so packing was about a tenth of a `POST /v1/jobs`'s CPU. redis-py's own hiredis
serializer (what its sync connections use when hiredis is installed) produces the same bytes in a fraction of that.
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from ..runtime import POOL_SIZE, POOL_WAIT_S

_SERIALIZER = cast(Any, HiredisRespSerializer)()  # typed in some redis-py releases, not in others


class _HiredisPacking:
    """Mixin for a redis-py asyncio connection class: `pack_command` through hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = _SERIALIZER.pack(*args)
        return packed


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _packing(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """`cls` (TCP, TLS or Unix socket connection) with hiredis packing; one subclass per class."""
    if cls not in _PACKING:
        _PACKING[cls] = type(cls.__name__, (_HiredisPacking, cls), {"__doc__": cls.__doc__})
    return _PACKING[cls]


def async_redis(url: str) -> redis.asyncio.Redis:
    """An asyncio client for `url` (any scheme redis-py takes), with C command packing when hiredis is installed."""
    # A blocking pool, as the sync clients have (producer/runtime.py): a burst past the pool's size waits for a
    # free connection instead of failing with "Too many connections".
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S)
    client = redis.asyncio.Redis.from_pool(pool)  # owns it: closing the client disconnects the pool
    if HIREDIS_AVAILABLE:
        pool.connection_class = _packing(pool.connection_class)
    return client
