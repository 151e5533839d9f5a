"""ETAs and positions with real processes: a steady run of 200 tiny jobs on one `sdq worker`, sampled through the
API while it drains, against when each job really finished."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from producer import JobRecord
from tests.support import Stack, start_stack, wait_for

# Serial: the estimate follows the fleet's recent pace, which tests running beside it on the other cores would move.
pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.serial]

JOBS = 200
#: Samples count once this many jobs have finished (the window has a rate to go on).
WARM_UP = 30
TINY = {"width": 64, "height": 64, "steps": 4}


@pytest.fixture
def stack(redis_server: str, model_cache: Path, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(tmp_path, redis_server, model_cache)
    yield running
    running.stop()


@pytest.mark.timeout(600)
def test_eta_of_a_steady_run_of_200_jobs_on_one_worker(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        _steady_run(stack, http)


def _steady_run(stack: Stack, http: httpx.Client) -> None:
    warm_up = http.post("/v1/jobs", json={"prompt": "warm up", "width": 72, "height": 72, "steps": 4}).json()
    assert warm_up["queue_position"] == 0
    assert http.get(f"/v1/jobs/{warm_up['id']}").json()["eta_s"]["reason"].startswith("no workers")
    stack.start_worker(SDQ_WORKER_THREADS="2", SDQ_BATCH_MAX="1")
    # The first call on a fresh process is slow (lazy initialisation): that is not the steady run being judged.
    wait_for(lambda: http.get(f"/v1/jobs/{warm_up['id']}").json()["status"] == "succeeded", timeout_s=240)
    batch = http.post("/v1/batches", json={"defaults": TINY, "items": [{"prompt": f"p{i}"} for i in range(JOBS)]})
    ids: list[str] = batch.json()["job_ids"]

    samples: list[tuple[str, float, float]] = []  # (job id, when sampled, predicted seconds to its finish)
    while True:
        batch_now = http.get(f"/v1/batches/{batch.json()['id']}").json()
        done = JOBS - batch_now["counts"]["queued"] - batch_now["counts"]["running"]
        if done >= JOBS:
            break
        page = http.get("/v1/jobs", params={"status": "queued", "limit": 200}).json()["jobs"]
        # (One consistent read of the page's records and places; a job claimed since the index was read is no
        # longer queued and has none.)
        queued = sorted((job for job in page if job["queue_position"] is not None), key=lambda j: j["queue_position"])
        # Positions are the line: 0, 1, 2, ... in the batch's order (nothing else is queued).
        positions = [job["queue_position"] for job in queued]
        assert positions == list(range(len(positions))), positions
        assert [ids.index(job["id"]) for job in queued] == sorted(ids.index(job["id"]) for job in queued)
        if done >= WARM_UP and queued:
            for job in (queued[0], queued[len(queued) // 2], queued[-1]):
                if job["eta_s"]["finish"] is not None:
                    samples.append((job["id"], time.time(), job["eta_s"]["finish"]))
        time.sleep(0.5)

    finished = {}
    for job_id in {sample[0] for sample in samples}:
        record = wait_for(lambda job_id=job_id: http.get(f"/v1/jobs/{job_id}").json(), timeout_s=30)
        assert record["status"] == "succeeded", record
        finished[job_id] = _timestamp(record["finished_at"])
    errors = []
    for job_id, at, predicted in samples:
        actual = finished[job_id] - at
        if actual > 1.0:  # a job about to finish: a fraction of a second is noise, not an estimate's error
            errors.append(abs(predicted - actual) / actual)
    assert len(errors) >= 10, f"too few samples ({len(errors)}): the run was too short to judge"
    median = statistics.median(errors)
    print(f"ETA median relative error {median:.3f} over {len(errors)} samples")
    # The bench (bench.scale) holds the 25 % target on a steady run; this machine is shared, and its throughput
    # moves with whatever else runs on it, which an estimate from the recent past cannot foresee.
    assert median <= 0.35, f"median relative error {median:.2f}"
    done_batch = http.get(f"/v1/batches/{batch.json()['id']}").json()
    assert done_batch["status"] == "completed" and done_batch["eta_s"] is None


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_the_live_stream_sends_the_place_in_line_when_it_changes(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        ahead, mine = (http.post("/v1/jobs", json={"prompt": p, **TINY}).json()["id"] for p in ("ahead", "mine"))
        seen: list[tuple[float, str, dict]] = []
        with httpx.stream("GET", f"{stack.api_url}/v1/jobs/{mine}/events", timeout=60) as response:
            for name, data in _events(response):
                seen.append((time.monotonic(), name, data))
                if name == "status" and data["status"] == "queued":
                    assert data["queue_position"] == 1 and data["eta_s"]["reason"].startswith("no workers")
                    http.post(f"/v1/jobs/{ahead}/cancel")
                elif name == "queue":
                    assert data == {"queue_position": 0, "eta_s": data["eta_s"]}
                    http.post(f"/v1/jobs/{mine}/cancel")
    names = [name for _, name, _ in seen]
    assert names == ["status", "queue", "status"] and seen[-1][2]["status"] == "canceled"
    assert seen[1][0] - seen[0][0] <= 3.0  # within a second or so of the change


def test_sdq_status_prints_the_place_in_line_and_why_there_is_no_eta(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        _, second = (http.post("/v1/jobs", json={"prompt": p, **TINY}).json()["id"] for p in ("a", "b"))
    status = subprocess.run(
        [sys.executable, "-m", "producer.cli", "status", second],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    record = JobRecord.model_validate_json(status.stdout)
    assert record.queue_position == 1 and record.eta_s is not None and record.eta_s.finish is None
    assert f"job {second}: queued, 1 ahead, no workers; the controller is starting capacity" in status.stderr


def _events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    event, data = "message", ""
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            if name == "event":
                event = value
            elif name == "data":
                data += value
            continue
        if data:
            yield event, json.loads(data)
        event, data = "message", ""
