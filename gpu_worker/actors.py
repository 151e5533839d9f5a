"""The worker's Dramatiq actor. Declared on a given broker at start-up: importing this module registers nothing."""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from producer.broker import BATCH_ACTOR, GENERATE_ACTOR

from .cohorts import cohorts_per_message
from .errors import TransientError
from .runner import JobRunner
from .settings import WorkerSettings

#: Dramatiq's defaults (20 retries over 7 days, a 10-minute limit) fit neither GPU jobs nor our attempt count.
MIN_BACKOFF_MS = 2_000
MAX_BACKOFF_MS = 60_000
#: Dramatiq runs a worker's prefetched messages lowest priority number first; interactive jobs have 0.
BATCH_PRIORITY = 100


def _retry_when(retries: int, exc: BaseException) -> bool:
    # Only transient failures are retried (Redis itself may be the thing that failed, so the runner could not
    # record anything); the runner records every other failure on the job and returns normally.
    return isinstance(exc, (TransientError, redis.RedisError)) and retries < 20


def declare_generate(broker: RedisBroker, runner: JobRunner, settings: WorkerSettings) -> dramatiq.Actor[Any, None]:
    """Register the `generate` actor on `broker`, running jobs with `runner`."""

    def generate(payload: dict[str, Any]) -> None:
        runner.run(payload)

    options: dict[str, Any] = {
        "retry_when": _retry_when,
        "min_backoff": MIN_BACKOFF_MS,
        "max_backoff": MAX_BACKOFF_MS,
        # A backstop only: the runner enforces job_timeout_s between denoising steps, where it is safe to stop.
        # A message also waits in the GPU executor for the cohorts ahead of it (its worker's other threads' jobs).
        "time_limit": int(
            (cohorts_per_message(settings.worker_threads, settings.batch_max) * settings.job_timeout_s + 300) * 1000
        ),
    }
    # Batch jobs: the same work from the batch queue, ranked below interactive jobs. The worker consumes both
    # queues and runs its prefetched messages in actor-priority order, so an interactive job overtakes every
    # waiting batch job (it waits only for the jobs already running).
    dramatiq.actor(
        generate,
        actor_name=BATCH_ACTOR,
        queue_name=settings.batch_queue,
        broker=broker,
        priority=BATCH_PRIORITY,
        **options,
    )
    return dramatiq.actor(generate, actor_name=GENERATE_ACTOR, queue_name=settings.queue, broker=broker, **options)
