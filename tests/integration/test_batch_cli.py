"""`sdq batch` against real processes (`sdq api`, a `sdq worker` on the tiny model, Redis): killed halfway and
re-run, it ends with every image and a manifest without duplicates; batch jobs yield to interactive ones."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image

from producer import JobStatus
from tests.support import Stack, start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ITEMS = 1000
SMALL = ["--width", "64", "--height", "64", "--steps", "2"]


@pytest.fixture(scope="module")
def stack(redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    running = start_stack(tmp_path_factory.mktemp("batch"), redis_server, model_cache)
    running.start_worker(SDQ_TORCH_THREADS="1")
    yield running
    running.stop()


def _sdq_batch(stack: Stack, prompts: Path, out: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "producer.cli", "batch", str(prompts), "--out", str(out), *SMALL]
    with (out.parent / "sdq-batch.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [*command, "--poll-interval-s", "0.2"], env={**stack.env}, stdout=log, stderr=subprocess.STDOUT
        )


def _manifest(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a torn last line while the writer is running
            rows.append(json.loads(line))
    return rows


@pytest.mark.timeout(1800)
def test_a_killed_batch_resumes_without_duplicates(stack: Stack, redis_server: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"prompt {i}", "seed": i}) + "\n" for i in range(ITEMS)))
    out = tmp_path / "out"
    first = _sdq_batch(stack, prompts, out)
    wait_for(lambda: len(_manifest(out)) >= ITEMS // 3 or first.poll() is not None, timeout_s=900, interval_s=0.2)
    assert first.poll() is None, "the first run ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = len(_manifest(out))
    assert 0 < done_before < ITEMS

    second = _sdq_batch(stack, prompts, out)
    assert second.wait(timeout=1500) == 0, (tmp_path / "sdq-batch.log").read_text()[-3000:]

    rows = _manifest(out)
    assert len(rows) == ITEMS
    assert len({row["key"] for row in rows}) == ITEMS and len({row["file"] for row in rows}) == ITEMS
    assert sorted(row["seed"] for row in rows) == list(range(ITEMS))
    assert {row["prompt"] for row in rows} == {f"prompt {i}" for i in range(ITEMS)}
    assert all(row["timings"]["inference_s"] is not None for row in rows)
    images = sorted(out.glob("*.png"))
    assert len(images) == ITEMS and not list(out.glob("*.part"))
    with Image.open(images[0]) as image:
        assert image.size == (64, 64)
    # The server made each job once: re-running re-submitted nothing it already had.
    assert redis.Redis.from_url(redis_server).zcard("sdq:jobs") == ITEMS

    third = _sdq_batch(stack, prompts, out)  # everything is done: a re-run has nothing to do
    assert third.wait(timeout=120) == 0
    assert len(_manifest(out)) == ITEMS and redis.Redis.from_url(redis_server).zcard("sdq:jobs") == ITEMS


def test_interactive_jobs_overtake_batch_jobs(stack: Stack) -> None:
    with stack.client() as client:
        batch = client.submit_batch([{"prompt": f"b{i}"} for i in range(300)], defaults={"width": 64, "height": 64})
        time.sleep(1.0)  # the worker is busy with the batch, and has prefetched some of it
        started = time.monotonic()
        job = client.wait(client.submit("interactive", width=64, height=64, steps=2).id)
        waited_s = time.monotonic() - started
        progress = client.get_batch(batch.id)
        assert job.status is JobStatus.SUCCEEDED
        done = progress.counts.succeeded + progress.counts.failed
        assert done < batch.total // 2, f"the interactive job waited for {done} batch jobs ({waited_s:.1f} s)"
        client.cancel_batch(batch.id)
        wait_for(lambda: client.get_batch(batch.id).status.value == "completed", timeout_s=300)


def test_a_failed_line_is_retried_by_the_next_run(stack: Stack, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    # `num_images` over the limit fails validation server-side for the whole batch: nothing is submitted.
    prompts.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": "bad", "num_images": 99}) + "\n")
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "producer.cli", "batch", str(prompts), "--out", str(out), *SMALL],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    # A request the API refuses (422) is the caller's input to fix: exit 2, like every configuration error (issue 14).
    assert run.returncode == 2 and "items.1.num_images" in run.stderr and "Traceback" not in run.stderr
    assert _manifest(out) == []
