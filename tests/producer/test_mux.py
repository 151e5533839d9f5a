"""The multiplexed connection of the hot route (api/mux.py) against a real redis-server: replies reach the callers
that sent the commands however many are in flight, scripts load on first use and again after a flush, a dropped
connection fails what was in flight and the next call reconnects, and the URL's user, password and database hold."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from producer.api.mux import MuxRedis, RedisPyScripts, scripts_for
from producer.embedded import EmbeddedRedis
from producer.errors import ReplyLostError

pytestmark = pytest.mark.redis


@pytest.fixture
def url(redis_server: str, redis_client: redis.Redis) -> Iterator[str]:
    redis_client.flushdb()
    yield redis_server


def _mux(url: str) -> MuxRedis:
    scripts = scripts_for(url, redis.asyncio.Redis.from_url(url))
    assert isinstance(scripts, MuxRedis)
    return scripts


def test_concurrent_commands_get_their_own_replies(url: str) -> None:
    async def main() -> list[object]:
        mux = _mux(url)
        try:
            return await asyncio.gather(*(mux.execute("ECHO", f"reply-{i}") for i in range(500)))
        finally:
            await mux.aclose()

    assert asyncio.run(main()) == [f"reply-{i}".encode() for i in range(500)]


def test_a_script_loads_on_first_use_and_again_after_a_flush(url: str, redis_client: redis.Redis) -> None:
    source = "redis.call('INCR', KEYS[1]); return {ARGV[1], redis.call('GET', KEYS[1])}"

    async def main() -> list[object]:
        mux = _mux(url)
        try:
            first = await mux.run(source, ["mux:n"], ["a"])
            redis_client.script_flush()
            return [first, await mux.run(source, ["mux:n"], ["b"])]
        finally:
            await mux.aclose()

    assert asyncio.run(main()) == [[b"a", b"1"], [b"b", b"2"]]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        asyncio.run(_once(url, "HGETALL", "mux:n"))


async def _once(url: str, *args: object) -> object:
    mux = _mux(url)
    try:
        return await mux.execute(*args)
    finally:
        await mux.aclose()


def test_a_dropped_connection_fails_what_was_in_flight_and_the_next_call_reconnects(
    url: str, redis_client: redis.Redis
) -> None:
    async def main() -> tuple[BaseException | object, object]:
        mux = _mux(url)
        try:
            client_id = await mux.execute("CLIENT", "ID")
            blocked = asyncio.ensure_future(mux.execute("BLPOP", "mux:never", 10))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(redis_client.client_kill_filter, _id=client_id)
            failed = await asyncio.gather(blocked, return_exceptions=True)
            return failed[0], await mux.execute("PING")
        finally:
            await mux.aclose()

    failed, pinged = asyncio.run(main())
    # sent and unanswered: whether Redis ran it is unknown (a writer answers OutcomeUnknownError, not "nothing")
    assert isinstance(failed, ReplyLostError) and isinstance(failed, redis.ConnectionError) and pinged == b"PONG"


def test_the_urls_user_password_and_database_are_used(url: str, redis_client: redis.Redis) -> None:
    redis_client.acl_setuser("sdq-mux", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
    try:
        base = url.rsplit("/", 1)[0].replace("redis://", "redis://sdq-mux:s3cret@")
        assert asyncio.run(_once(base + "/3", "SET", "mux:db", "3")) == b"OK"
        assert redis.Redis.from_url(url.rsplit("/", 1)[0] + "/3").get("mux:db") == b"3"
        assert redis_client.get("mux:db") is None
        wrong = url.replace("redis://", "redis://sdq-mux:wrong@")
        with pytest.raises(redis.AuthenticationError):
            asyncio.run(_once(wrong, "PING"))
    finally:
        redis_client.acl_deluser("sdq-mux")
        redis.Redis.from_url(url.rsplit("/", 1)[0] + "/3").flushdb()


def test_urls_it_does_not_speak_go_through_redis_py(url: str) -> None:
    aclient = redis.asyncio.Redis.from_url(url)
    for other in ("rediss://127.0.0.1:6379/0", url + "?socket_timeout=5"):
        assert isinstance(scripts_for(other, aclient), RedisPyScripts)
    assert isinstance(scripts_for("unix:///tmp/sdq-redis.sock?db=2", aclient), MuxRedis)


def test_it_speaks_over_a_unix_socket_with_a_database(tmp_path: Path) -> None:
    # The embedded Redis `sdq api` starts by itself listens on a Unix socket only.
    with EmbeddedRedis(tmp_path) as embedded:
        url = embedded.url + "?db=2"
        assert asyncio.run(_once(url, "SET", "mux:unix", "1")) == b"OK"
        client = redis.Redis.from_url(url)
        assert client.get("mux:unix") == b"1" and redis.Redis.from_url(embedded.url).get("mux:unix") is None
        client.close()


def test_a_redis_that_stops_answering_fails_the_waiting_calls_in_time_and_the_next_call_reconnects(
    tmp_path: Path,
) -> None:
    # A paused server (SIGSTOP: what a failover, a stalled host or a full network path look like to a client)
    # accepts bytes and answers nothing. Before the timeout, a submission waited on it for as long as its client did.
    with EmbeddedRedis(tmp_path) as embedded:
        pid = int((tmp_path / "redis.pid").read_text())

        async def main() -> tuple[list[object], float, object]:
            options = {"path": str(embedded.socket)}
            mux = MuxRedis(options, reply_timeout_s=0.5)
            try:
                assert await mux.execute("PING") == b"PONG"
                os.kill(pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    waited = await asyncio.gather(
                        mux.execute("PING"), mux.execute("ECHO", "late"), return_exceptions=True
                    )
                    elapsed = time.monotonic() - started
                finally:
                    os.kill(pid, signal.SIGCONT)
                return waited, elapsed, await mux.execute("ECHO", "again")
            finally:
                await mux.aclose()

        waited, elapsed, again = asyncio.run(main())
    assert all(isinstance(result, redis.TimeoutError) for result in waited), waited
    assert 0.4 < elapsed < 3.0
    assert again == b"again"  # the replies owed on the old connection cannot reach the wrong caller


def test_a_server_that_never_accepts_fails_the_connect_in_time() -> None:
    # A TCP listener that never accepts, its accept queue full: Linux then drops the SYNs of further connections,
    # and connect() hangs (retrying) instead of failing.
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # more than the queue holds: the ones past it are left connecting
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)

        async def main() -> float:
            mux = MuxRedis({"host": "127.0.0.1", "port": port}, connect_timeout_s=0.5)
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError, match="cannot connect"):
                await mux.execute("PING")
            await mux.aclose()
            return time.monotonic() - started

        assert asyncio.run(main()) < 3.0
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
