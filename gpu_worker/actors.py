"""The worker's Dramatiq actor. Declared on a given broker at start-up: importing this module registers nothing."""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from producer.broker import GENERATE_ACTOR

from .errors import TransientError
from .runner import JobRunner
from .settings import WorkerSettings

#: Dramatiq's defaults (20 retries over 7 days, a 10-minute limit) fit neither GPU jobs nor our attempt count.
MIN_BACKOFF_MS = 2_000
MAX_BACKOFF_MS = 60_000


def _retry_when(retries: int, exc: BaseException) -> bool:
    # Only transient failures are retried (Redis itself may be the thing that failed, so the runner could not
    # record anything); the runner records every other failure on the job and returns normally.
    return isinstance(exc, (TransientError, redis.RedisError)) and retries < 20


def declare_generate(broker: RedisBroker, runner: JobRunner, settings: WorkerSettings) -> dramatiq.Actor[Any, None]:
    """Register the `generate` actor on `broker`, running jobs with `runner`."""

    def generate(payload: dict[str, Any]) -> None:
        runner.run(payload)

    return dramatiq.actor(
        generate,
        actor_name=GENERATE_ACTOR,
        queue_name=settings.queue,
        broker=broker,
        retry_when=_retry_when,
        min_backoff=MIN_BACKOFF_MS,
        max_backoff=MAX_BACKOFF_MS,
        # A backstop only: the runner enforces job_timeout_s between denoising steps, where it is safe to stop.
        time_limit=int((settings.job_timeout_s + 300) * 1000),
    )
