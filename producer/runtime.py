"""Opening what a process needs from its settings: Redis (real or embedded), the broker, the job store."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

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


@contextmanager
def open_backends(settings: CommonSettings, *, middleware: Sequence[Middleware] = ()) -> Iterator[Backends]:
    """Connect to `SDQ_REDIS_URL`, or to the embedded Redis (starting it if needed); close everything on exit."""
    embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir)
    url = settings.redis_url or embedded.start()  # type: ignore[union-attr]
    client = redis.Redis.from_url(url, health_check_interval=30)
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
