"""A burst of concurrent requests on one `sdq api` process is served, not refused: past its Redis pool's size a
request waits for a free connection (redis-py 8 caps a plain pool at 100 and then fails at once, which the API
answered with 503 "unavailable"). Real `sdq api` subprocess, real Redis, real HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from tests.support import start_stack

pytestmark = pytest.mark.redis

BURST = 300


def test_a_burst_of_300_concurrent_submissions_is_served_without_a_503(redis_server: str, tmp_path: Path) -> None:
    redis.Redis.from_url(redis_server).flushdb()
    stack = start_stack(tmp_path, redis_server, tmp_path / "models")
    try:

        async def burst() -> Counter[int]:
            limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, limits=limits) as client:
                body = {"prompt": "a burst", "width": 64, "height": 64, "steps": 1}
                answers = await asyncio.gather(*(client.post("/v1/jobs", json=body) for _ in range(BURST)))
            return Counter(a.status_code for a in answers)

        statuses = asyncio.run(burst())
    finally:
        stack.stop()
    assert statuses == Counter({202: BURST}), statuses
    assert redis.Redis.from_url(redis_server).zcard("sdq:jobs") == BURST
