"""Opening what a process needs from its settings: Redis (real or embedded), the broker, the job store."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from filelock import FileLock

from .broker import make_broker
from .embedded import EmbeddedRedis
from .privatefs import private_dir, write_private
from .settings import CommonSettings
from .store import JobStore


@dataclass
class Backends:
    """The live connections of one process."""

    redis_url: str
    client: redis.Redis
    broker: RedisBroker
    store: JobStore
    embedded: EmbeddedRedis | None


#: Connections one process's pool may open. redis-py 8 caps a pool at 100 and then raises "Too many connections"
#: at once, which a burst of requests on one API process turned into 503s; a blocking pool of this size makes the
#: excess wait for a free connection instead (up to `POOL_WAIT_S`, then the usual "unavailable").
POOL_SIZE = 512
POOL_WAIT_S = 10.0


def blocking_pool(url: str, **kwargs: Any) -> redis.BlockingConnectionPool:
    """A connection pool for `url` whose callers wait for a free connection rather than fail."""
    return redis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S, **kwargs)


@contextmanager
def open_backends(settings: CommonSettings, *, middleware: Sequence[Middleware] = ()) -> Iterator[Backends]:
    """Connect to `SDQ_REDIS_URL`, or to the embedded Redis (starting it if needed); close everything on exit."""
    embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir)
    url = settings.redis_url or embedded.start()  # type: ignore[union-attr]
    client = redis.Redis.from_pool(blocking_pool(url, health_check_interval=30))  # closing it closes the pool
    try:
        broker = make_broker(client, heartbeat_timeout_s=settings.heartbeat_timeout_s, middleware=middleware)
        yield Backends(url, client, broker, JobStore(client, ttl_s=settings.job_ttl_s), embedded)
    finally:
        client.close()
        if embedded is not None:
            embedded.stop()


def signing_secret(settings: CommonSettings) -> bytes:
    """The key for local download links: `SDQ_SIGNING_SECRET`, else one generated once under the data dir."""
    if settings.signing_secret is not None:
        return settings.signing_secret.get_secret_value().encode()
    path = private_dir(settings.data_dir) / "signing.key"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            write_private(path, secrets.token_hex(32))
        return path.read_text().strip().encode()
