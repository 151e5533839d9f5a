"""Settings of `sdq webhooks` (the webhook sender), read once from `SDQ_*` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr

from ..setting_types import CommaList
from ..settings import CommonSettings


class WebhookSettings(CommonSettings):
    """Settings of `sdq webhooks`, the CPU process that turns job events into signed deliveries."""

    webhook_secrets: CommaList[SecretStr] = Field(
        default_factory=list,
        description="SDQ_WEBHOOK_SECRETS: comma-separated `whsec_…` signing secrets; every one signs each message"
        " (rotation: add the new one first, remove the old one later). Unset = one generated in data_dir.",
    )
    webhook_threads: int = Field(
        default=8, ge=1, le=256, description="SDQ_WEBHOOK_THREADS: deliveries in flight at once (they wait on I/O)."
    )
    webhook_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="SDQ_WEBHOOK_TIMEOUT_S: time a receiver has to answer one attempt (connect, headers and body).",
    )
    webhook_max_in_flight_per_endpoint: int = Field(
        default=4,
        ge=1,
        le=256,
        description="SDQ_WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT: attempts to one receiver (scheme, host, port) in flight"
        " at once, over every `sdq webhooks` process; more wait their turn, so a slow receiver cannot hold every"
        " delivery thread. Keep it below SDQ_WEBHOOK_THREADS.",
    )
    webhook_retry_schedule_s: CommaList[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0],
        min_length=1,
        description="SDQ_WEBHOOK_RETRY_SCHEDULE_S: comma-separated delay before each attempt (first = 0);"
        " default immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h (about a day in all).",
    )
    webhook_jitter: float = Field(
        default=0.1, ge=0, le=0.5, description="SDQ_WEBHOOK_JITTER: each retry delay varies by ± this fraction."
    )
    webhook_max_retry_after_s: float = Field(
        default=36000.0,
        ge=0,
        description="SDQ_WEBHOOK_MAX_RETRY_AFTER_S: a receiver's Retry-After is honoured up to this many seconds.",
    )
    webhook_progress_interval_s: float = Field(
        default=2.0, ge=0, description="SDQ_WEBHOOK_PROGRESS_INTERVAL_S: least time between two job.progress events."
    )
