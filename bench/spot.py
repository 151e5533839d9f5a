"""Spot interruptions end to end: a notice, the job's hand-off with a checkpoint, and its resume on another worker.

    python -m bench.spot [--providers aws,gcp,azure] [--size 256] [--steps 60] [--poll-s 1.0]

Runs real processes on the embedded default (embedded Redis, `sdq api`, `sdq worker`s, local storage, the tiny
model) and a local fake metadata server (`tests/fake_metadata.py`) that posts each cloud's notice. Per provider:
worker A (watching that provider's notice) starts the job; mid-run the notice is posted with a deadline ~1 s away,
so A must checkpoint and hand off; worker B resumes the job. Prints one JSON line: per provider
`notice_to_requeue_s` (notice posted → job queued again with its checkpoint) and `steps_lost` (steps A computed
that B does not reuse), and the interrupted job's end-to-end time against the same job uninterrupted, measured in
the same run (`resumed_vs_uninterrupted`, which includes worker B's cold start), and whether the resumed image is
byte-identical to the uninterrupted one.

`run_spot_interruption` and `FakeMetadata` are the reusable pieces (`bench.scaling` imports them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from producer import Client, JobRecord, JobRequest, JobStatus
from producer.embedded import EmbeddedRedis
from producer.jobs import Scheduler
from producer.localstack import LocalStack
from tests.fake_metadata import FakeMetadata

__all__ = ["FakeMetadata", "SpotRun", "post_notice", "run_spot_interruption", "spot_worker_env"]

log = logging.getLogger("bench.spot")

T = TypeVar("T")

PROVIDERS = ("aws", "gcp", "azure")
#: How far ahead the posted notice's deadline lies: too close for the job to finish, so it must hand off.
NOTICE_DEADLINE_S = 1.0


@dataclass(frozen=True)
class SpotRun:
    """What one interruption did: its two figures, the hand-off as recorded, and the job's final record."""

    provider: str
    job_id: str
    notice_to_requeue_s: float
    steps_lost: int
    checkpoint_step: int
    #: The record right after the hand-off (status queued, `checkpoint` set, `handoffs` ≥ 1).
    handed_off: JobRecord
    #: The interrupted worker's exit code (0: it drained and exited on its own).
    interrupted_exit_code: int | None
    final: JobRecord
    #: Seconds from submission to success.
    job_s: float


def spot_worker_env(provider: str, metadata_url: str, *, poll_s: float = 1.0) -> dict[str, str]:
    """`SDQ_*` settings of a worker that watches `provider`'s notices at the fake metadata server."""
    return {
        "SDQ_SPOT": provider,
        "SDQ_SPOT_POLL_INTERVAL_S": str(poll_s),
        "SDQ_SPOT_NOTICE_S": str(NOTICE_DEADLINE_S),  # GCP names no deadline
        "SDQ_AWS_METADATA_URL": metadata_url,
        "SDQ_GCP_METADATA_URL": metadata_url,
        "SDQ_AZURE_METADATA_URL": metadata_url,
    }


def post_notice(fake: FakeMetadata, provider: str, *, in_s: float = NOTICE_DEADLINE_S) -> None:
    """Post `provider`'s reclaim notice on the fake metadata server, `in_s` seconds ahead."""
    if provider == "aws":
        fake.aws_spot(in_s=in_s)
    elif provider == "gcp":
        fake.gcp_preempt()
    elif provider == "azure":
        fake.azure_preempt(in_s=in_s)
    else:
        raise ValueError(f"unknown provider {provider!r}")


def run_spot_interruption(
    stack: LocalStack,
    client: Client,
    fake: FakeMetadata,
    provider: str,
    request: JobRequest,
    *,
    poll_s: float = 1.0,
    interrupt_at_step: int = 3,
    timeout_s: float = 300.0,
    resume_env: dict[str, str] | None = None,
    first_env: dict[str, str] | None = None,
    before_notice: Callable[[], object] | None = None,
) -> SpotRun:
    """One interruption end to end on a running `stack` with no worker of its own (see the module doc).

    Starts worker A (spot-watching), submits `request`, posts the notice once A is `interrupt_at_step` steps in,
    waits for the hand-off and for A to exit, then starts worker B (`resume_env` extra settings) and waits for the
    job. B is left running. `first_env` adds settings to A; `before_notice` runs right before the notice.
    Raises `RuntimeError` if any of it does not happen within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    first = stack.start_worker(**spot_worker_env(provider, fake.url, poll_s=poll_s), **(first_env or {}))
    submitted = time.monotonic()
    job = client.submit(request)
    _poll(
        lambda: (r := client.get(job.id)).progress is not None and r.progress.step >= interrupt_at_step,
        deadline,
        "job to start",
    )
    if before_notice is not None:
        before_notice()
    noticed = time.monotonic()
    post_notice(fake, provider)
    handed_off = _poll(lambda: _handed_off(client.get(job.id)), deadline, "hand-off", interval_s=0.005)
    notice_to_requeue_s = time.monotonic() - noticed
    first_exit = first.wait(timeout=max(1.0, deadline - time.monotonic()))
    checkpoint = handed_off.checkpoint
    checkpoint_step = checkpoint.step if checkpoint else 0
    done_by_first = handed_off.progress.step if handed_off.progress else 0
    stack.start_worker(**(resume_env or {}))
    final = client.wait(job.id, timeout_s=max(1.0, deadline - time.monotonic()))
    return SpotRun(
        provider=provider,
        job_id=job.id,
        notice_to_requeue_s=notice_to_requeue_s,
        steps_lost=max(0, done_by_first - checkpoint_step),
        checkpoint_step=checkpoint_step,
        handed_off=handed_off,
        interrupted_exit_code=first_exit,
        final=final,
        job_s=time.monotonic() - submitted,
    )


def _handed_off(record: JobRecord) -> JobRecord | None:
    return record if record.handoffs >= 1 and record.status is JobStatus.QUEUED else None


def _poll(predicate: Callable[[], T | None], deadline: float, what: str, *, interval_s: float = 0.05) -> T:
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for the {what}")
        time.sleep(interval_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--poll-s", type=float, default=1.0, help="spot watcher poll interval (AWS default: 5)")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    request = JobRequest(
        prompt="a bench",
        width=args.size,
        height=args.size,
        steps=args.steps,
        seed=7,
        scheduler=Scheduler.EULER_ANCESTRAL,
    )
    figures: dict[str, object] = {"bench": "spot", "size": args.size, "steps": args.steps, "poll_s": args.poll_s}
    with tempfile.TemporaryDirectory(prefix="sdq-bench-") as tmp, FakeMetadata() as fake:
        root = Path(tmp)
        from gpu_worker.tiny import build_tiny_pipeline

        build_tiny_pipeline(root / "models" / "tiny")
        env = {**os.environ, "SDQ_DATA_DIR": str(root / "data"), "SDQ_MODEL_CACHE_DIR": str(root / "models")}
        env |= {"HF_HUB_OFFLINE": "1", "SDQ_TORCH_THREADS": str(args.torch_threads), "SDQ_IDLE_TIMEOUT_S": "0"}
        env.pop("SDQ_REDIS_URL", None)
        env.pop("SDQ_STORAGE_URL", None)
        with (
            EmbeddedRedis(root / "data"),
            LocalStack(env, root / "data" / "logs") as stack,
            Client(stack.api_url) as client,
        ):
            # Baseline, same run: the same job on one worker, uninterrupted (after a warm-up job).
            stack.start_worker()
            client.wait(client.submit(request.model_copy(update={"steps": 1})).id)
            started = time.monotonic()
            baseline = client.wait(client.submit(request).id, poll_interval_s=0.02)
            uninterrupted_s = time.monotonic() - started
            assert baseline.status is JobStatus.SUCCEEDED, baseline.error
            _stop_workers(stack)
            for provider in args.providers.split(","):
                fake.reset()
                run = run_spot_interruption(stack, client, fake, provider, request, poll_s=args.poll_s)
                _stop_workers(stack)
                assert run.final.status is JobStatus.SUCCEEDED, run.final.error
                objects = root / "data" / "objects"
                identical = all(
                    (objects / a.key).read_bytes() == (objects / b.key).read_bytes()
                    for a, b in zip(run.final.outputs, baseline.outputs, strict=True)
                )
                log.info(
                    "%s: %s handed off at step %d, resumed on attempt %d",
                    provider,
                    run.job_id,
                    run.checkpoint_step,
                    run.final.attempts,
                )
                figures[provider] = {
                    "notice_to_requeue_s": round(run.notice_to_requeue_s, 3),
                    "steps_lost": run.steps_lost,
                    "checkpoint_step": run.checkpoint_step,
                    "attempts": run.final.attempts,
                    "resumed_vs_uninterrupted": round(run.job_s / uninterrupted_s, 3),
                    "image_identical_to_uninterrupted": identical,
                }
    runs = [v for v in figures.values() if isinstance(v, dict)]
    figures["notice_to_requeue_s"] = max(r["notice_to_requeue_s"] for r in runs)
    figures["steps_lost"] = max(r["steps_lost"] for r in runs)
    figures["uninterrupted_job_s"] = round(uninterrupted_s, 3)
    print(json.dumps(figures))


def _stop_workers(stack: LocalStack) -> None:
    """SIGTERM the stack's workers and wait for them (the API keeps running)."""
    for process in stack.workers:
        if process.poll() is None:
            process.terminate()
    for process in stack.workers:
        process.wait(timeout=60)


if __name__ == "__main__":
    main()
