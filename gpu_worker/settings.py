"""Settings of `sdq worker`, read once at the entry point."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from producer.settings import CommonSettings


class WorkerSettings(CommonSettings):
    """A GPU worker's knobs. Each field names its environment variable."""

    device: str = Field(default="auto", description="SDQ_DEVICE: `auto` (CUDA when present), `cuda`, `cuda:1`, `cpu`.")
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
        description="SDQ_WORKER_ID: name recorded on the jobs this worker runs.",
    )
    worker_threads: int = Field(default=1, ge=1, le=16, description="SDQ_WORKER_THREADS: jobs run at once.")
    prefetch: int = Field(
        default=0,
        ge=0,
        le=64,
        description="SDQ_PREFETCH: messages held beyond those running. Low: a held message waits for this worker"
        " (for the heartbeat timeout if it dies) while other workers may be idle.",
    )
    poll_interval_s: float = Field(
        default=0.05,
        gt=0,
        le=5,
        description="SDQ_POLL_INTERVAL_S: longest pause between two fetches, also right after a job ends (Dramatiq"
        " backs off up to this while jobs run; its default of 1 s would idle the GPU that long after each job).",
    )
    job_timeout_s: float = Field(
        default=1800.0, gt=0, description="SDQ_JOB_TIMEOUT_S: a job still denoising after this fails with `timeout`."
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        description="SDQ_LEASE_S: a running job's lease; renewed every lease/3 s, so another worker may take over"
        " a job whose worker went silent this long.",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="SDQ_TORCH_THREADS: CPU threads for torch; unset = torch's default (one per core). On a shared"
        " CPU, fewer threads avoid OpenMP spin-waiting against other processes.",
    )
    max_loaded_models: int = Field(
        default=1, ge=1, le=16, description="SDQ_MAX_LOADED_MODELS: pipelines kept in memory at once."
    )
    shutdown_timeout_s: float = Field(
        default=30.0, ge=0, description="SDQ_SHUTDOWN_TIMEOUT_S: on SIGTERM, how long running jobs may finish."
    )
    progress_interval_s: float = Field(
        default=0.1, ge=0, description="SDQ_PROGRESS_INTERVAL_S: least time between two progress writes of a job."
    )
