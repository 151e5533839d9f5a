"""Workers report their GPU figures and idle timers (`GET /v1/fleet/workers`): a real worker process against a real
Redis and a real `sdq api`; the record expires when the worker dies; a Redis outage only costs reports."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gpu_worker.gpu_stats import GpuStatsReader
from gpu_worker.middleware import BusyClock, IdleShutdown, StatusReporter
from producer import keys
from producer.localstack import free_port
from producer.worker_status import WorkerStatus, read_statuses, report_status
from tests.support import Stack, start_stack, wait_for

pytestmark = pytest.mark.redis


@pytest.fixture
def stack(redis_server: str, model_cache: Path, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(tmp_path, redis_server, model_cache, SDQ_TORCH_THREADS="1")
    yield running
    running.stop()


def _listed(stack: Stack, worker_id: str) -> dict[str, Any]:
    """The worker's entry in `GET /v1/fleet/workers`; {} when it is not listed."""
    answer = httpx.get(f"{stack.api_url}/v1/fleet/workers", timeout=10)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = next((w for w in answer.json()["workers"] if w["id"] == worker_id), {})
    return found


@pytest.mark.slow
@pytest.mark.serial  # one report a second, counted against the wall clock: alone, not beside other tests
def test_a_worker_reports_within_seconds_and_its_idle_timer_runs(stack: Stack) -> None:
    worker = stack.start_worker(SDQ_WORKER_ID="w-status", SDQ_IDLE_TIMEOUT_S="600", SDQ_STATUS_INTERVAL_S="1")
    wait_for(lambda: _listed(stack, "w-status"), timeout_s=120, interval_s=0.2)  # the model loads first
    # Past its first second: while Dramatiq starts its threads the idle clock may restart once (the report follows
    # IdleShutdown's own clock, which decides the retirement).
    first = wait_for(lambda: (r := _listed(stack, "w-status")).get("idle_s", 0) >= 1 and r, timeout_s=30)
    assert first["device"] == "cpu" and first["jobs_running"] == 0 and first["report_s"] == 1
    # A CPU worker has no GPU figures, and says so rather than reporting zeros.
    assert first["gpu_name"] is None and first["utilization_ratio"] is None and first["memory_used_bytes"] is None
    assert first["gpu_reason"] == "runs on cpu: no GPU to report"
    assert 0 < first["retires_in_s"] <= 600 and first["idle_s"] + first["retires_in_s"] == pytest.approx(600, abs=0.01)

    def two_reports_later() -> dict[str, Any]:
        report = _listed(stack, "w-status")
        return report if report.get("updated_at", 0) >= first["updated_at"] + 2 else {}

    later = wait_for(two_reports_later, timeout_s=30)
    assert later["idle_s"] >= first["idle_s"] + 1.5
    assert later["retires_in_s"] <= first["retires_in_s"] - 1.5
    assert time.time() - later["updated_at"] < 5  # fresh: one report a second
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    assert _listed(stack, "w-status") == {}  # a worker that stops clears its report


@pytest.mark.slow
def test_a_worker_that_never_retires_says_so_and_a_dead_one_drops_out(stack: Stack, redis_server: str) -> None:
    worker = stack.start_worker(SDQ_WORKER_ID="w-forever", SDQ_IDLE_TIMEOUT_S="0", SDQ_STATUS_INTERVAL_S="1")
    report = wait_for(lambda: _listed(stack, "w-forever"), timeout_s=120, interval_s=0.2)
    assert report["retires_in_s"] is None
    ttl_ms = redis.Redis.from_url(redis_server).pttl(keys.worker_status("w-forever"))
    assert 1000 < ttl_ms <= 3000  # three report intervals
    worker.kill()  # no shutdown hook runs: only the TTL takes it out
    worker.wait(timeout=30)
    killed = time.monotonic()
    wait_for(lambda: _listed(stack, "w-forever") == {}, timeout_s=10, interval_s=0.2)
    assert time.monotonic() - killed <= 4


def test_reports_past_their_ttl_are_not_listed(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    status = WorkerStatus(
        id="w-short", hostname="h", instance_type="g5.xlarge", device="cuda:0", gpu_name="NVIDIA A10G",
        utilization_ratio=0.5, memory_used_bytes=1, memory_total_bytes=2, jobs_running=1, idle_s=0,
        retires_in_s=None, report_s=0.1, updated_at=time.time(),
    )  # fmt: skip
    report_status(client, status, ttl_s=0.3)
    assert read_statuses(client).workers == [status]
    time.sleep(0.4)
    assert read_statuses(client).workers == []
    assert client.zcard(keys.WORKER_STATUSES) == 0  # the reader drops expired ids from the set


def test_a_redis_outage_only_logs_and_reports_resume(redis_server: str, caplog: pytest.LogCaptureFixture) -> None:
    # A real client to a port nothing listens on, then to the real server: no stand-in for Redis.
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    reporter = StatusReporter(
        "w-outage", hostname="h", instance_type="unknown", device_name=lambda: "cpu",
        gpu=GpuStatsReader(), clock=BusyClock(), idle=None, interval_s=0.05,
    )  # fmt: skip
    reporter._client = dead
    thread = threading.Thread(target=reporter._loop, daemon=True)
    with caplog.at_level(logging.WARNING, logger="gpu_worker.middleware.status"):
        thread.start()
        wait_for(lambda: sum("status report failed" in r.message for r in caplog.records) >= 2, timeout_s=10)
    assert thread.is_alive()
    live = redis.Redis.from_url(redis_server)
    live.flushdb()
    reporter._client = live
    found = wait_for(lambda: read_statuses(live).workers, timeout_s=10)
    assert found[0].id == "w-outage" and found[0].retires_in_s is None and found[0].gpu_reason is not None
    reporter._stop.set()
    thread.join(timeout=5)


def _reporter(device: str, gpu: GpuStatsReader, idle: IdleShutdown | None = None) -> StatusReporter:
    clock = idle.clock if idle is not None else BusyClock()
    return StatusReporter(
        "w", hostname="h", instance_type="g5.xlarge", device_name=lambda: device, gpu=gpu, clock=clock, idle=idle
    )


def test_a_cuda_workers_report_carries_its_own_gpus_figures() -> None:
    # No NVIDIA driver here: the fake NVML of test_gpu_stats stands in (the `gpu` test below reads the real one).
    from tests.gpu_worker.test_gpu_stats import MACHINE, FakeNvml

    reader = GpuStatsReader(visible_devices="GPU-bbbb2222-0000", device_index=0, nvml=FakeNvml(MACHINE))
    idle = IdleShutdown(120, threading.Event(), BusyClock())
    status = _reporter("cuda:0", reader, idle).status()
    assert (status.gpu_name, status.utilization_ratio) == ("NVIDIA H100", 0.4)
    assert (status.memory_used_bytes, status.memory_total_bytes) == (1 << 30, 80 << 30)
    assert status.gpu_reason is None and status.retires_in_s is not None and 119 < status.retires_in_s <= 120


def test_a_cuda_worker_nvml_cannot_read_says_why() -> None:
    from tests.gpu_worker.test_gpu_stats import FakeNvml

    reader = GpuStatsReader(nvml=FakeNvml([]))
    status = _reporter("cuda:0", reader).status()
    assert status.gpu_name is None and status.memory_used_bytes is None
    assert status.gpu_reason == "NVML found no devices"


@pytest.mark.gpu
def test_on_a_gpu_the_report_reads_the_real_nvml() -> None:
    status = _reporter("cuda:0", GpuStatsReader(device_index=0)).status()
    assert status.gpu_name and status.memory_total_bytes and status.memory_total_bytes > 0
    assert status.memory_used_bytes is not None and 0 <= status.memory_used_bytes <= status.memory_total_bytes
    assert status.utilization_ratio is not None and 0 <= status.utilization_ratio <= 1
