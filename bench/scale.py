"""A million queued jobs: what a deep backlog costs Redis, the controller and the API, and how good ETAs are.

    python -m bench.scale [--jobs 1000000] [--seconds 5] [--clients 32] [--run-s 240] [--workers 1]

Runs a real redis-server (with sdqueue's recommended settings, `producer.embedded.RECOMMENDED_CONFIG`) and a real
`sdq api` (API keys required), and measures the same figures twice in one run: at an empty queue (`*_empty`) and
with `--jobs` queued through `POST /v1/batches` (10 000 items each) and no workers (`*_ratio` = deep / empty):

* `redis_bytes_per_queued_job` (used memory, client buffers left out, per job of 200-character prompt) and
  `redis_bytes_per_finished_job` (2 000 jobs finished by the worker's own claim and settle scripts, messages acked);
* `controller_tick_ms_p50/p99` (`Controller.tick`: maintenance, janitor when due, the work count, a decision) and
  `janitor_sweep_ms` (median of a few `Janitor.sweep` calls; the first one, which finds the counts agree, separately);
* `post_job_p99_ms` (32 clients), `get_job_with_position_ms_p99` (the last job in line), `list_page_ms_p99`
  (`GET /v1/jobs?status=queued`, 50 a page) and `batch_jobs_page_ms_p99` (`GET /v1/batches/{id}/jobs`), over raw
  keep-alive HTTP (bench/api.py's load generator), and `batch_jobs_per_s`.

Then it starts `--workers` real workers on the tiny model (64², 4 steps) for `--run-s` seconds, samples the ETA of
jobs ahead in line after the first minute, waits for them to finish, and reports `eta_median_abs_error`: the
median of |predicted - actual| / actual time to finish (and the same for the start). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.api import _exchange, _measure, _quantile, _redis, _request
from producer import keys
from producer.apikeys import KeyStore
from producer.broker import make_broker
from producer.controller.providers.base import NoProvider
from producer.controller.service import Controller
from producer.embedded import RECOMMENDED_CONFIG
from producer.jobs import JobStatus, Output, Timings
from producer.localstack import LocalStack
from producer.settings import ControllerSettings
from producer.store import JobStore

log = logging.getLogger("bench.scale")
PROMPT = ("a lighthouse at dusk over a stormy sea, oil on canvas, dramatic clouds, " * 4)[:200]
JOB = {"width": 64, "height": 64, "steps": 4}
BATCH = 10_000
FINISHED_SAMPLE = 2_000
#: Places in line whose ETA is sampled (a few near the front, so that they finish within the run).
AHEAD = (5, 15, 30, 60, 120, 240)


def _used(client: redis.Redis) -> int:
    """Memory the data set uses: `used_memory` without client buffers (a 10 000-job request inflates them)."""
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))


async def _post_batches(port: int, token: str, count: int, items: int) -> tuple[float, list[str]]:
    """Jobs/s through `POST /v1/batches` (`count` batches of `items` jobs), and the job ids of the first batch."""
    body = json.dumps({"defaults": JOB, "items": [{"prompt": PROMPT, "seed": i} for i in range(items)]}).encode()
    request = _request("POST", "/v1/batches", token, body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    first: list[str] = []
    began = time.perf_counter()
    for index in range(count):
        status, answer = await _exchange(reader, writer, request)
        if status != 202:
            raise RuntimeError(f"HTTP {status}: {answer[:300]!r}")
        if index == 0:
            first = json.loads(answer)["job_ids"]
    elapsed = time.perf_counter() - began
    writer.close()
    return count * items / elapsed, first


def _timed(call: Callable[[], object], times: int, pause_s: float = 0.0) -> list[float]:
    took = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        took.append((time.perf_counter() - began) * 1000)
        if pause_s:
            time.sleep(pause_s)
    return took


def _finish(store: JobStore, job_ids: list[str]) -> None:
    """Finish jobs as a worker does (its claim and settle scripts, a recorded run time), and ack their messages
    as Dramatiq does (they are batch jobs: the Redis message id is the job id)."""
    msgs, queue = "dramatiq:sdq-batch.msgs", "dramatiq:sdq-batch"
    for job_id in job_ids:
        claim = store.claim(job_id, worker="bench", lease_s=60, max_attempts=3)
        assert claim.attempt is not None, claim
        output = Output(key=f"jobs/{job_id}/0.png", content_type="image/png", bytes=1234, width=64, height=64, seed=1)
        timings = Timings(queue_wait_s=1.5, load_s=0.0, inference_s=0.1, encode_s=0.01, upload_s=0.01, batch_size=1)
        store.settle(job_id, claim.attempt, JobStatus.SUCCEEDED, outputs=[output], timings=timings, warnings=[])
        pipe = store.client.pipeline(transaction=False)
        pipe.hdel(msgs, job_id)
        pipe.lrem(queue, 1, job_id)
        pipe.execute()


def _phase(stack: LocalStack, client: redis.Redis, token: str, args: argparse.Namespace, base: int) -> dict[str, Any]:
    """Every figure at the queue as it is now (`base`: used memory before any job)."""
    port, figures = stack.port, {}
    store = JobStore(client, ttl_s=86400)
    settings = ControllerSettings(
        redis_url=stack.env["SDQ_REDIS_URL"], provider="none", queue="sdq-generate", batch_queue="sdq-batch"
    )
    controller = Controller(
        settings, store=store, broker=make_broker(client, heartbeat_timeout_s=60), provider=NoProvider()
    )
    ticks = _timed(controller.tick, 100, pause_s=0.02)
    figures["controller_tick_ms_p50"] = round(_quantile(ticks, 0.5), 2)
    figures["controller_tick_ms_p99"] = round(_quantile(ticks, 0.99), 2)
    first_sweep = _timed(controller.janitor.sweep, 1)[0]
    figures["janitor_sweep_ms"] = round(statistics.median(_timed(controller.janitor.sweep, 5)), 2)
    figures["janitor_first_sweep_ms"] = round(first_sweep, 2)
    post = _measure(
        port,
        _request("POST", "/v1/jobs", token, json.dumps({"prompt": PROMPT, **JOB}).encode()),
        202,
        args.clients,
        args.seconds,
    )
    figures["post_job_p99_ms"] = post.figures()["p99_ms"]
    rate, first = asyncio.run(_post_batches(port, token, args.batches, BATCH))
    figures["batch_jobs_per_s"] = round(rate, 1)
    members: list[bytes] = client.zrange(keys.LINE, -1, -1)  # type: ignore[assignment]
    last = members[0].decode()
    get = _measure(port, _request("GET", f"/v1/jobs/{last}", token), 200, args.get_clients, args.seconds / 2)
    figures["get_job_with_position_ms_p99"] = get.figures()["p99_ms"]
    figures["last_position"] = int(client.zrank(keys.LINE, last))  # type: ignore[arg-type]
    page = _measure(
        port, _request("GET", "/v1/jobs?status=queued&limit=50", token), 200, args.get_clients, args.seconds / 2
    )
    figures["list_page_ms_p99"] = page.figures()["p99_ms"]
    queued = int(client.zcard(keys.LINE))
    figures["queued"] = queued
    figures["redis_bytes_per_queued_job"] = round((_used(client) - base) / queued, 1)
    before = _used(client)
    _finish(store, first[:FINISHED_SAMPLE])
    delta = (_used(client) - before) / FINISHED_SAMPLE
    figures["redis_bytes_per_finished_job"] = round(figures["redis_bytes_per_queued_job"] + delta, 1)
    batch = json.loads(httpx.get(f"{stack.api_url}/v1/jobs/{first[0]}", headers=_auth(token)).text)["batch_id"]
    jobs_page = _measure(
        port, _request("GET", f"/v1/batches/{batch}/jobs?limit=100", token), 200, args.get_clients, args.seconds / 2
    )
    figures["batch_jobs_page_ms_p99"] = jobs_page.figures()["p99_ms"]
    return figures


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _eta_run(stack: LocalStack, token: str, front: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Workers drain the line for `--run-s`; ETAs of jobs a few places apart near the front (`front`: the line's
    first ids, in order) are sampled once a minute of throughput is in, and judged once those jobs have ended."""
    http = httpx.Client(base_url=stack.api_url, headers=_auth(token), timeout=30)
    for _ in range(args.workers):
        stack.start_worker(SDQ_WORKER_THREADS="2", SDQ_BATCH_MAX="4")
    samples: list[tuple[str, float, float, float]] = []  # job id, when, predicted start, predicted finish
    steady_from, head = None, 0
    deadline = time.monotonic() + args.run_s
    while time.monotonic() < deadline and head < len(front):
        while head < len(front) and http.get(f"/v1/jobs/{front[head]}").json()["status"] != "queued":
            head += 1  # the front of the line moves on
        probes = [http.get(f"/v1/jobs/{front[head + p]}").json() for p in AHEAD if head + p < len(front)]
        estimated = [job for job in probes if job["eta_s"] and job["eta_s"]["finish"] is not None]
        if estimated and steady_from is None:
            steady_from = time.monotonic()  # the first estimate: judged from a minute later on
        if steady_from is not None and time.monotonic() - steady_from >= 60:
            samples += [
                (job["id"], time.time(), job["eta_s"]["start"] or 0.0, job["eta_s"]["finish"]) for job in estimated
            ]
        time.sleep(2.0)
    errors, start_errors, give_up = [], [], time.monotonic() + 900
    for job_id, at, start, finish in samples:
        record = http.get(f"/v1/jobs/{job_id}").json()
        while record["status"] in ("queued", "running") and time.monotonic() < give_up:
            time.sleep(1.0)
            record = http.get(f"/v1/jobs/{job_id}").json()
        if record["status"] != "succeeded":
            continue
        actual = datetime.fromisoformat(record["finished_at"]).timestamp() - at
        begun = datetime.fromisoformat(record["started_at"]).timestamp() - at
        if actual > 2.0:  # a job about to finish: a fraction of a second is noise, not an estimate's error
            errors.append((finish - actual) / actual)
        if begun > 2.0:
            start_errors.append((start - begun) / begun)
    http.close()
    return {
        "eta_median_abs_error": _median(abs(e) for e in errors),
        "eta_start_median_abs_error": _median(abs(e) for e in start_errors),
        "eta_median_signed_error": _median(errors),  # > 0: the estimates were late
        "eta_p90_abs_error": round(_quantile([abs(e) for e in errors], 0.9), 3) if errors else None,
        "eta_samples": len(errors),
        "eta_workers": args.workers,
    }


def _median(values: Iterable[float]) -> float | None:
    found = list(values)
    return round(statistics.median(found), 3) if found else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    config = [arg for name, value in RECOMMENDED_CONFIG.items() for arg in (f"--{name}", value)]
    with tempfile.TemporaryDirectory() as tmp, _redis(Path(tmp), *config) as redis_url:
        client = redis.Redis.from_url(redis_url)
        _, token = KeyStore(client).create("bench", rate_per_s=1e6, burst=1_000_000, max_queued_jobs=10**9)
        env = {
            **os.environ,
            "SDQ_REDIS_URL": redis_url,
            "SDQ_DATA_DIR": tmp,
            "SDQ_AUTH": "required",
            "SDQ_MODEL_CACHE_DIR": str(_tiny(Path(tmp))),
            "HF_HUB_OFFLINE": "1",
        }
        with LocalStack(env, Path(tmp) / "logs", log_level="warning") as stack:
            base = _used(client)
            args.batches = 2
            empty = _phase(stack, client, token, args, base)
            log.info("empty: %s", empty)
            rate, _ = asyncio.run(_post_batches(stack.port, token, max(0, args.jobs - empty["queued"]) // BATCH, BATCH))
            log.info("queued %d jobs at %.0f jobs/s", client.zcard(keys.LINE), rate)
            deep = _phase(stack, client, token, args, base)
            log.info("deep: %s", deep)
            front = [m.decode() for m in client.zrange(keys.LINE, 0, 20_000)]  # type: ignore[union-attr]
            eta = _eta_run(stack, token, front, args)
        client.close()
    figures: dict[str, Any] = {"jobs": args.jobs}
    for name, value in deep.items():
        figures[name] = value
        figures[f"{name}_empty"] = empty[name]
        if isinstance(value, float) and empty[name]:
            figures[f"{name}_ratio"] = round(value / empty[name], 2)
    figures.update(eta)
    figures["cpus"] = os.cpu_count() or 0
    return figures


def _tiny(root: Path) -> Path:
    from gpu_worker.tiny import build_tiny_pipeline

    build_tiny_pipeline(root / "models" / "tiny")
    return root / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--get-clients", type=int, default=8)
    parser.add_argument("--run-s", type=float, default=240.0, help="how long workers run for the ETA figure")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.stdout.write(json.dumps(run(args)) + "\n")


if __name__ == "__main__":
    main()
