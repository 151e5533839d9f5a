"""What open event streams cost the API: its CPU and the latency of other requests, with N streams open vs none.

    python -m bench.sse [--streams 500] [--seconds 5] [--clients 4]

Runs a real redis-server and a real `sdq api` (one server process, API keys required, the stream cap set above
`--streams`), submits one job per stream (no worker runs, so every job stays queued and its stream stays open:
the stream a waiting client holds), then measures twice, first with no stream open and then with `--streams`
`GET /v1/jobs/{id}/events` streams open (held by a thread of this process that reads and discards them):
the API process's CPU seconds per wall second while otherwise idle (from psutil), and the p50/p99 of
`GET /v1/jobs/{id}` under a light load of `--clients` connections (bench/api.py's load generator). Prints one
JSON line: both figures of both phases, their ratios, and the CPU each open stream costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import redis

from producer.apikeys import KeyStore
from producer.localstack import LocalStack

from .api import JOB, Load, _exchange, _measure, _quantile, _redis, _request

log = logging.getLogger("bench.sse")
#: Streams being opened at once.
OPENING_AT_ONCE = 50


class Streams:
    """`n` event streams held open in a thread of their own (its own event loop), bodies read and discarded."""

    def __init__(self, port: int, token: str, job_ids: list[str]) -> None:
        self.port, self.token, self.job_ids = port, token, job_ids
        self.opened = threading.Semaphore(0)
        self.refused: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    def __enter__(self) -> Streams:
        self._thread.start()
        for _ in self.job_ids:
            if not self.opened.acquire(timeout=60):
                raise RuntimeError("streams did not open in time")
        if self.refused:
            raise RuntimeError(f"{len(self.refused)} streams refused: {self.refused[0][:300]!r}")
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        # Clients arriving, not one burst: each process's Redis pools hold 100 connections (redis-py's default),
        # and a burst of more concurrent key checks than that is answered 503 (a limit of its own, not measured here).
        self._opening = asyncio.Semaphore(OPENING_AT_ONCE)
        tasks = [asyncio.create_task(self._hold(job_id)) for job_id in self.job_ids]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _hold(self, job_id: str) -> None:
        async with self._opening:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(_request("GET", f"/v1/jobs/{job_id}/events", self.token))
            head = await reader.readuntil(b"\r\n\r\n")
        try:
            if head[9:12] != b"200":
                self.refused.append(head + await reader.read(1000))
            self.opened.release()
            while await reader.read(65536):
                pass
        finally:
            writer.close()


def _cpu_per_s(process: psutil.Process, seconds: float) -> float:
    """CPU seconds per wall second `process` (and its children) spent over the next `seconds`."""

    def total() -> float:
        times = [process.cpu_times(), *(child.cpu_times() for child in process.children(recursive=True))]
        return float(sum(t.user + t.system for t in times))

    before, began = total(), time.perf_counter()
    time.sleep(seconds)
    return (total() - before) / (time.perf_counter() - began)


def _phase(stack: LocalStack, token: str, job_id: str, seconds: float, clients: int) -> tuple[float, Load]:
    process = psutil.Process(stack.api.pid) if stack.api else psutil.Process()
    time.sleep(1.0)  # let what opening the streams cost settle
    cpu = _cpu_per_s(process, seconds)
    load = _measure(stack.port, _request("GET", f"/v1/jobs/{job_id}", token), 200, clients, seconds)
    return cpu, load


def _submit(port: int, token: str, count: int) -> list[str]:
    async def go() -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ids = []
        for _ in range(count):
            status, body = await _exchange(
                reader, writer, _request("POST", "/v1/jobs", token, json.dumps(JOB).encode())
            )
            if status != 202:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
            ids.append(json.loads(body)["id"])
        writer.close()
        return ids

    return asyncio.run(go())


def run(streams: int, seconds: float, clients: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, _redis(Path(tmp)) as redis_url:
        client = redis.Redis.from_url(redis_url)
        _, token = KeyStore(client).create("bench", rate_per_s=1e6, burst=1_000_000, max_queued_jobs=100_000_000)
        env = {
            **os.environ,
            "SDQ_REDIS_URL": redis_url,
            "SDQ_DATA_DIR": tmp,
            "SDQ_AUTH": "required",
            "SDQ_API_WORKERS": "1",
            "SDQ_MAX_STREAMS_PER_KEY": str(streams + 10),
            "SDQ_API_LIMIT_CONCURRENCY": str(streams + clients + 100),
        }
        with LocalStack(env, Path(tmp) / "logs") as stack:
            job_ids = _submit(stack.port, token, max(streams, 1))
            idle_cpu, idle = _phase(stack, token, job_ids[0], seconds, clients)
            log.info("no streams: %.3f CPU s/s, GET p99 %.2f ms", idle_cpu, _quantile(idle.latencies_s, 0.99) * 1000)
            with Streams(stack.port, token, job_ids[:streams]):
                open_cpu, busy = _phase(stack, token, job_ids[0], seconds, clients)
            log.info(
                "%d streams: %.3f CPU s/s, GET p99 %.2f ms", streams, open_cpu, _quantile(busy.latencies_s, 0.99) * 1000
            )
        client.close()
    idle_p99, busy_p99 = _quantile(idle.latencies_s, 0.99), _quantile(busy.latencies_s, 0.99)
    return {
        "streams": streams,
        "api_cpu_s_per_s_idle": round(idle_cpu, 4),
        "api_cpu_s_per_s_streams": round(open_cpu, 4),
        "api_cpu_ms_per_s_per_stream": round((open_cpu - idle_cpu) / max(streams, 1) * 1000, 4),
        "get_p50_ms_idle": round(_quantile(idle.latencies_s, 0.5) * 1000, 2),
        "get_p99_ms_idle": round(idle_p99 * 1000, 2),
        "get_p50_ms_streams": round(_quantile(busy.latencies_s, 0.5) * 1000, 2),
        "get_p99_ms_streams": round(busy_p99 * 1000, 2),
        "get_p99_streams_vs_idle": round(busy_p99 / idle_p99, 2),
        "get_per_s_idle": round(idle.requests_per_s, 1),
        "get_per_s_streams": round(busy.requests_per_s, 1),
        "clients": clients,
        "cpus": os.cpu_count() or 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    sys.stdout.write(json.dumps(run(args.streams, args.seconds, args.clients)) + "\n")


if __name__ == "__main__":
    main()
