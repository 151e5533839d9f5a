"""ETAs from the throughput window in a real Redis: the rate and run times it measures, the estimate it makes,
and, with no worker alive, no number but the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from producer import eta, keys
from producer.holdings import Holdings, clear_holdings, report_holdings
from producer.jobs import JobRequest
from tests.support import make_app

pytestmark = pytest.mark.redis

TINY = {"width": 64, "height": 64, "steps": 2}
SMALL = JobRequest(prompt="a", **TINY)
LARGE = JobRequest(prompt="a", width=512, height=512, steps=30)


def test_the_window_measures_the_rate_and_each_size_classs_run_time(redis_client: redis.Redis) -> None:
    now = 1_000_000.0
    # One worker running 64² jobs back to back, 2 s each, for the last 50 s; three 512² jobs of 9 s in between.
    for i in range(24):
        eta.record_finish(redis_client, SMALL, 2.0, images=1, at=now - 50 + 2 * i)
    for i in range(3):
        eta.record_finish(redis_client, LARGE, 9.0, images=1, at=now - 30 + i)
    report_holdings(redis_client, "w1", Holdings(), ttl_s=30)
    pace = eta.read_pace(redis_client, now=now)
    assert pace.finished == 27 and pace.workers == 1
    # 27 jobs over the 46 s between the first and last finish, plus one mean run time
    assert pace.rate == pytest.approx(27 / (46 + (24 * 2 + 3 * 9) / 27))
    assert pace.run_time(SMALL) == pytest.approx(2.0) and pace.run_time(LARGE) == pytest.approx(9.0)
    assert pace.run_time(JobRequest(prompt="a", width=128, height=128)) == pytest.approx((24 * 2 + 3 * 9) / 27)
    queued = pace.estimate(10, SMALL)
    assert queued.reason is None and queued.start == pytest.approx(10 / pace.rate, abs=0.05)  # nothing running
    assert queued.finish == pytest.approx(queued.start + 2.0, abs=0.05)
    # Buckets older than the window are not read, and expire by themselves.
    later = eta.read_pace(redis_client, now=now + eta.BUCKET_S * eta.WINDOW_BUCKETS + 70)
    assert later.finished == 0 and later.rate is None
    bucket = keys.throughput(int((now - 1) // eta.BUCKET_S))
    assert 0 < redis_client.ttl(bucket) <= eta.BUCKET_S * (eta.WINDOW_BUCKETS + 1)


def test_a_change_of_pace_shows_within_a_minute(redis_client: redis.Redis) -> None:
    now = 1_500_000.0
    # A slow first minute (a cold worker: 10 s a job), then 1 s a job for the last 50 s.
    for i in range(6):
        eta.record_finish(redis_client, SMALL, 10.0, images=1, at=now - 105 + 10 * i)
    for i in range(50):
        eta.record_finish(redis_client, SMALL, 1.0, images=1, at=now - 50 + i)
    report_holdings(redis_client, "w1", Holdings(), ttl_s=30)
    pace = eta.read_pace(redis_client, now=now)
    assert pace.finished == 50 and pace.rate == pytest.approx(50 / 50) and pace.run_time(SMALL) == 1.0
    # With too few jobs in the last minute, the whole window counts.
    redis_client.flushdb()
    for i in range(6):
        eta.record_finish(redis_client, SMALL, 10.0, images=1, at=now - 105 + 10 * i)
    eta.record_finish(redis_client, SMALL, 1.0, images=1, at=now - 5)
    report_holdings(redis_client, "w1", Holdings(), ttl_s=30)
    assert eta.read_pace(redis_client, now=now).finished == 7


def test_one_serial_worker_gives_exact_start_times(redis_client: redis.Redis) -> None:
    # Jobs of 3 s back to back: the job with p jobs ahead (one running) starts in (p + 0.5) × 3 s on average.
    now = 2_000_000.0
    for i in range(20):
        eta.record_finish(redis_client, SMALL, 3.0, images=1, at=now - 60 + 3 * i)
    report_holdings(redis_client, "w1", Holdings(), ttl_s=30)
    redis_client.zadd(keys.index("running"), {"j": 1})
    pace = eta.read_pace(redis_client, now=now)
    assert pace.rate == pytest.approx(1 / 3)
    assert pace.estimate(4, SMALL).start == pytest.approx(13.5)
    assert pace.estimate(4, SMALL).finish == pytest.approx(16.5)


def test_without_live_workers_there_is_no_number_but_a_reason(redis_client: redis.Redis) -> None:
    now = 3_000_000.0
    eta.record_finish(redis_client, SMALL, 1.0, images=1, at=now - 5)
    report_holdings(redis_client, "gone", Holdings(), ttl_s=1)
    clear_holdings(redis_client, "gone")
    pace = eta.read_pace(redis_client, now=now)
    assert pace.workers == 0
    assert pace.estimate(3, SMALL) == eta.Eta(reason=eta.NO_WORKERS)


def test_a_job_and_a_batch_say_why_they_have_no_eta_while_no_worker_runs(
    redis_client: redis.Redis, redis_server: str, tmp_path: Path
) -> None:
    with TestClient(make_app(redis_server, tmp_path, auth=False)) as http:
        job = http.post("/v1/jobs", json={"prompt": "one", **TINY}).json()
        assert job["queue_position"] == 0
        got = http.get(f"/v1/jobs/{job['id']}").json()
        assert got["queue_position"] == 0
        assert got["eta_s"] == {
            "start": None,
            "finish": None,
            "reason": "no workers; the controller is starting capacity",
        }
        batch = http.post("/v1/batches", json={"defaults": TINY, "items": [{"prompt": "b"}] * 3}).json()
        assert http.get(f"/v1/batches/{batch['id']}").json()["eta_s"]["reason"] == eta.NO_WORKERS
        # A worker is up but nothing has finished yet: still no number, and the reason says so.
        report_holdings(redis_client, "w1", Holdings(), ttl_s=30)
        http.app.state.deps.forecaster.ttl_s = 0  # no cached snapshot: the next read sees the worker
        got = http.get(f"/v1/jobs/{job['id']}").json()
        assert got["eta_s"]["start"] is None and "no job finished" in got["eta_s"]["reason"]
        http.post(f"/v1/jobs/{job['id']}/cancel")
        assert http.get(f"/v1/jobs/{job['id']}").json()["eta_s"] is None
