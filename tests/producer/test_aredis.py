"""The API's asyncio Redis client packs commands in C (hiredis) to the very bytes redis-py's Python packer makes."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from producer.api.aredis import async_redis

VALUES = ["EVALSHA", "é ascii", b"\x00bytes", 0, -5, 2**70, 0.1 + 0.2, 1e-7, 1e20, float("inf"), "x" * 10_000]


def test_packs_the_same_bytes_as_redis_py() -> None:
    python = Connection()
    packed = async_redis("redis://127.0.0.1:1/0").connection_pool.connection_class()
    assert type(packed).__mro__[1].__name__ == "_HiredisPacking"  # hiredis is a dependency: the fast path is on
    assert b"".join(packed.pack_command(*VALUES)) == b"".join(python.pack_command(*VALUES))
    assert b"".join(packed.pack_command("CONFIG GET", "x")) == b"".join(python.pack_command("CONFIG GET", "x"))
    for bad in (True, None, object()):  # refused like redis-py refuses them, before anything is sent
        with pytest.raises(DataError):
            packed.pack_command("SET", "k", bad)


@pytest.mark.redis
def test_round_trips_through_a_real_server(redis_server: str) -> None:
    async def scenario() -> None:
        client = async_redis(redis_server)
        try:
            script = client.register_script("return {KEYS[1], ARGV[1], ARGV[2]}")
            assert await script(keys=["sdq:test:aredis"], args=["é", 2**40]) == [
                b"sdq:test:aredis",
                "é".encode(),
                b"1099511627776",
            ]
            async with client.pipeline(transaction=True) as pipe:
                pipe.set("sdq:test:aredis", b"\x00" * 100_000).get("sdq:test:aredis").delete("sdq:test:aredis")
                assert await pipe.execute() == [True, b"\x00" * 100_000, 1]
        finally:
            await client.aclose()

    asyncio.run(scenario())
