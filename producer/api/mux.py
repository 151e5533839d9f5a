"""One multiplexed Redis connection for the hot route: every request of the event loop shares it.

redis-py's asyncio client takes a connection from a pool for each command (a condition, a timeout) and writes it
with a system call of its own. Under load `POST /v1/jobs` spent about a fifth of its CPU there (docs/
submit-profile.md). `MuxRedis` keeps one connection per server process: commands are written back to back and
replies come back in the same order (Redis answers each connection in order), so a reply goes to the oldest
waiting request. The commands of every request that ran in one turn of the event loop leave in one write.

It speaks RESP2 over TCP or a Unix socket, with the URL's password, user and database. Other URLs (TLS, socket
options in the query) get `RedisPyScripts`, the same calls through redis-py's asyncio client.

A Redis that stops answering (paused, a failover, a full network path) fails the calls waiting on it after
`reply_timeout_s` (5 s, redis-py's default socket timeout, which every other client of the API has) with
`redis.TimeoutError`, and the connection is dropped: replies still owed on it could no longer be matched to their
callers. The next call connects again. A connection that goes down fails its waiting calls with `ReplyLostError`.
Either way Redis may have run the command (a paused server runs what it was sent once it resumes): callers that
wrote answer `OutcomeUnknownError` (producer/errors.py), not "nothing was enqueued". One timer per connection
watches the oldest call in line, not one per call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any, Protocol, cast

import hiredis
import redis
import redis.asyncio
from redis.asyncio.connection import UnixDomainSocketConnection, parse_url
from redis.commands.core import AsyncScript

from ..errors import ReplyLostError

_PLAIN = frozenset({"host", "port", "db", "username", "password", "path"})
#: Seconds a call waits for its reply, and a connection attempt for the server: redis-py's defaults.
REPLY_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0


class Scripts(Protocol):
    """What the direct submission path needs of Redis."""

    async def run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run the Lua script `source` (loading it on first use)."""
        ...

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        """The hash at `key`."""
        ...

    async def aclose(self) -> None:
        """Close its connections."""
        ...


def scripts_for(url: str, aclient: redis.asyncio.Redis) -> Scripts:
    """A `MuxRedis` for `url` when it is a plain TCP or Unix-socket URL, else `aclient`'s `RedisPyScripts`."""
    options: dict[str, Any] = dict(parse_url(url))
    unix = options.pop("connection_class", None)
    if unix not in (None, UnixDomainSocketConnection) or not set(options) <= _PLAIN:
        return RedisPyScripts(aclient)
    return MuxRedis(options)


class RedisPyScripts:
    """`Scripts` through a redis-py asyncio client (which the app closes)."""

    def __init__(self, aclient: redis.asyncio.Redis) -> None:
        self.aclient = aclient
        self._scripts: dict[str, AsyncScript] = {}

    async def run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.aclient.register_script(source)
        return await script(keys=keys, args=args)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = await self.aclient.hgetall(key)  # type: ignore[assignment]
        return found

    async def aclose(self) -> None:
        pass


class MuxRedis:
    """One pipelined connection (opened on first use, again after it drops) shared by every caller of one event
    loop. `options`: `redis.asyncio.connection.parse_url`'s, plain TCP or Unix socket; see the module's doc for
    the timeouts."""

    def __init__(
        self,
        options: dict[str, Any],
        *,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.options = options
        self.reply_timeout_s = reply_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._link: _Link | None = None
        self._connecting: asyncio.Lock | None = None
        self._shas: dict[str, str] = {}

    async def run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest()
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # first use, or the server lost its scripts (restart, flush)
            await self.execute("SCRIPT", "LOAD", source)
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        flat = await self.execute("HGETALL", key)
        return dict(zip(flat[0::2], flat[1::2], strict=True))

    async def execute(self, *args: Any) -> Any:
        """One command's reply; raises `redis.ResponseError` (its subclass for NOSCRIPT), `redis.ConnectionError` or
        `redis.TimeoutError` (no reply within `reply_timeout_s`)."""
        link = self._link
        if link is None or link.lost:
            link = await self._connect()
        reply = await link.send(hiredis.pack_command(args))
        if isinstance(reply, redis.ResponseError):
            raise _error(reply)
        return reply

    async def aclose(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    async def _connect(self) -> _Link:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connection for all the callers that found none
            if self._link is not None and not self._link.lost:
                return self._link
            loop = asyncio.get_running_loop()

            def protocol() -> _Link:
                return _Link(self.reply_timeout_s)

            if "path" in self.options:
                connecting = loop.create_unix_connection(protocol, self.options["path"])
            else:
                host, port = self.options.get("host", "localhost"), self.options.get("port", 6379)
                connecting = loop.create_connection(protocol, host, port)
            try:
                _, link = await asyncio.wait_for(connecting, self.connect_timeout_s)
            except TimeoutError:
                raise redis.TimeoutError(f"cannot connect to Redis within {self.connect_timeout_s:g} s") from None
            except OSError as exc:
                raise redis.ConnectionError(f"cannot connect to Redis: {exc}") from exc
            await self._handshake(link)
            self._link = link
            return link

    async def _handshake(self, link: _Link) -> None:
        password, user, db = self.options.get("password"), self.options.get("username"), self.options.get("db")
        steps: list[tuple[Any, ...]] = []
        if password:
            steps.append(("AUTH", user, password) if user else ("AUTH", password))
        if db:
            steps.append(("SELECT", db))
        for step in steps:
            reply = await link.send(hiredis.pack_command(step))
            if isinstance(reply, redis.ResponseError):
                link.close()
                raise _error(reply)


def _error(reply: redis.ResponseError) -> redis.RedisError:
    text = str(reply)
    if text.startswith("NOSCRIPT"):
        return redis.exceptions.NoScriptError(text)
    if text.startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
        return redis.AuthenticationError(text)
    return reply


class _Link(asyncio.Protocol):
    """The connection: commands out in one write per turn of the event loop, replies matched to callers in order;
    the oldest call waiting longer than `reply_timeout_s` ends it (see the module's doc)."""

    def __init__(self, reply_timeout_s: float = REPLY_TIMEOUT_S) -> None:
        self.reader = hiredis.Reader(replyError=redis.ResponseError)
        #: The calls waiting for their replies, oldest first: when each was sent (the event loop's clock), its future.
        self.waiting: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self.outgoing: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.reply_timeout_s = reply_timeout_s
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport

    def send(self, packed: bytes | list[bytes]) -> asyncio.Future[Any]:
        if self.lost:
            raise redis.ConnectionError("the connection to Redis was lost")
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        now = loop.time()
        self.waiting.append((now, reply))
        if self._watch is None:
            self._watch = loop.call_at(now + self.reply_timeout_s, self._check_replies)
        if not self.outgoing:  # the first command of this turn: send them all at its end
            loop.call_soon(self._flush)
        if isinstance(packed, bytes):
            self.outgoing.append(packed)
        else:
            self.outgoing.extend(packed)
        return reply

    def _flush(self) -> None:
        if self.transport is not None and not self.lost and self.outgoing:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            _, waiter = self.waiting.popleft()
            if not waiter.done():  # a caller that gave up (cancelled) still had its reply in line
                waiter.set_result(reply)

    def _check_replies(self) -> None:
        """The watch timer: fail everything in line if its oldest call is overdue, else look again when it will be."""
        self._watch = None
        if not self.waiting or self.lost:
            return
        loop = asyncio.get_running_loop()
        due = self.waiting[0][0] + self.reply_timeout_s
        if loop.time() < due:
            self._watch = loop.call_at(due, self._check_replies)
            return
        error = redis.TimeoutError(f"Redis did not answer within {self.reply_timeout_s:g} s")
        self._fail_all(error)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(ReplyLostError(f"the connection to Redis was lost: {exc or 'closed'}"))

    def _fail_all(self, error: redis.RedisError) -> None:
        self.lost = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self.waiting:
            _, waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
