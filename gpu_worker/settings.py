"""Settings of `sdq worker`, read once at the entry point."""

from __future__ import annotations

import os
import socket
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from producer.inputs import InputSettings
from producer.jobs import Scheduler
from producer.setting_types import CloudEndpointSettings, CommaList, comma_list
from producer.settings import CommonSettings


class WorkerSettings(CommonSettings, CloudEndpointSettings, InputSettings):
    """A GPU worker's knobs. Each field names its environment variable. The limits on input images
    (`InputSettings`) are the API's: the worker checks every image again when it prepares a job."""

    device: str = Field(default="auto", description="SDQ_DEVICE: `auto` (CUDA when present), `cuda`, `cuda:1`, `cpu`.")
    cuda_visible_devices: str | None = Field(
        default=None,
        validation_alias="CUDA_VISIBLE_DEVICES",
        description="CUDA_VISIBLE_DEVICES (CUDA's own variable, read for the GPU metrics: they report the device"
        " `SDQ_DEVICE` names among these).",
    )
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
        description="SDQ_WORKER_ID: name recorded on the jobs this worker runs.",
    )
    worker_threads: int = Field(
        default=8,
        ge=1,
        le=64,
        description="SDQ_WORKER_THREADS: jobs held at once. Each thread claims a job and hands it to the GPU"
        " executor, so this bounds what a batch can gather (at least `batch_max` for full batches; about twice that"
        " lets one batch's jobs encode and upload while the next batch denoises).",
    )
    batch_max: int = Field(
        default=4,
        ge=1,
        le=64,
        description="SDQ_BATCH_MAX: most images in one pipeline call. Compatible jobs (same model, size, steps,"
        " scheduler, guidance) share a call; pick what fits the GPU's memory (out-of-memory splits a batch anyway).",
    )
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0,
        le=60_000,
        description="SDQ_BATCH_WAIT_MS: longest a job waits for company before its batch starts. Under load, batches"
        " fill while the GPU is busy and nobody waits; this only delays the first job after an idle spell.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="SDQ_METRICS_PORT: serve Prometheus metrics on this port (`/metrics`); unset: no server.",
    )
    metrics_host: str = Field(
        default="0.0.0.0",  # scraped from outside the container or pod
        description="SDQ_METRICS_HOST: address the metrics server binds.",
    )
    prefetch: int = Field(
        default=0,
        ge=0,
        le=64,
        description="SDQ_PREFETCH: messages held beyond those running. Low: a held message waits for this worker"
        " (for the heartbeat timeout if it dies) while other workers may be idle.",
    )
    poll_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=5,
        description="SDQ_POLL_INTERVAL_S: longest pause between two fetches of an empty queue. Every enqueue rings"
        " a Redis doorbell that wakes idle workers at once (producer/doorbell.py), so this only bounds how late a"
        " worker sees a job whose ring it missed (Redis restarted, a producer that does not ring). Every poll of"
        " every queue costs the denoising thread the GIL (measured: 0.05 s cost 6 % of throughput on CPU).",
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
    device_process: bool = Field(
        default=True,
        description="SDQ_DEVICE_PROCESS: load models and denoise in a child process with an interpreter of its own,"
        " so the worker's uploads, Redis calls and Dramatiq threads never hold the GIL the denoising loop needs"
        " (gpu_worker/device/process.py). `false`: everything in one process.",
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
    # --- scale to zero and spot interruptions ---
    idle_timeout_s: float = Field(
        default=900.0,
        ge=0,
        description="SDQ_IDLE_TIMEOUT_S: a worker with nothing running or fetched this long drains and exits 0"
        " (then retires its VM, see SDQ_RETIRE); 0 = never.",
    )
    retire: Literal["none", "aws", "azure", "gcp", "kubernetes"] = Field(
        default="none",
        description="SDQ_RETIRE: after an idle exit, remove this machine from its group so it is not replaced: `aws`"
        " (TerminateInstanceInAutoScalingGroup, decrementing desired capacity), `azure` (delete the VM Scale Set"
        " instance), `gcp` (delete the instance from its managed instance group); `kubernetes` and `none` just exit.",
    )
    spot: Literal["none", "aws", "azure", "gcp"] = Field(
        default="none",
        description="SDQ_SPOT: whose spot/preemption notices to watch; on a notice the worker stops fetching, hands"
        " back held messages, finishes or checkpoints the job in flight, and exits 0.",
    )
    spot_poll_interval_s: float = Field(
        default=5.0, gt=0, le=60, description="SDQ_SPOT_POLL_INTERVAL_S: how often the notice is read (GCP waits)."
    )
    spot_margin_s: float = Field(
        default=10.0,
        ge=0,
        description="SDQ_SPOT_MARGIN_S: time kept free before the machine is reclaimed, for encoding and upload or for"
        " the checkpoint: a job finishes only if its remaining steps (at the measured step time) end this early.",
    )
    spot_notice_s: float = Field(
        default=30.0,
        gt=0,
        description="SDQ_SPOT_NOTICE_S: the notice assumed where the provider names no time (GCP preemption: 30 s).",
    )
    aws_metadata_url: str = Field(
        default="http://169.254.169.254", description="SDQ_AWS_METADATA_URL: EC2 instance metadata service (IMDSv2)."
    )
    gcp_metadata_url: str = Field(
        default="http://metadata.google.internal", description="SDQ_GCP_METADATA_URL: the GCE metadata server."
    )
    azure_metadata_url: str = Field(
        default="http://169.254.169.254", description="SDQ_AZURE_METADATA_URL: Azure instance metadata service."
    )
    checkpoint_storage_url: str | None = Field(
        default=None,
        description="SDQ_CHECKPOINT_STORAGE_URL: where interrupted jobs' checkpoints go"
        " (`checkpoints/<job>/<attempt>.pt`, deleted when the job ends); unset = the output storage. Give the prefix"
        " a lifecycle rule of a day or so.",
    )
    # --- cost accounting (producer/cost.py) ---
    instance_type: str = Field(
        default="unknown",
        max_length=64,
        description="SDQ_INSTANCE_TYPE: the machine type this worker runs on (`g5.xlarge`, `Standard_NC4as_T4_v3`,"
        " `g2-standard-4`), looked up in the API's price table (SDQ_PRICES).",
    )
    capacity_type: Literal["auto", "spot", "on_demand"] = Field(
        default="auto",
        description="SDQ_CAPACITY_TYPE: how the machine is bought; `auto` = spot when SDQ_SPOT watches notices.",
    )
    usage_interval_s: float = Field(
        default=30.0, gt=0, le=3600, description="SDQ_USAGE_INTERVAL_S: how often uptime is recorded for costs."
    )
    status_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="SDQ_STATUS_INTERVAL_S: how often the worker reports its GPU figures and idle timer"
        " (`GET /v1/fleet/workers`); a report expires after three intervals.",
    )
    # --- model cache (NVMe) and models in memory ---
    model_cache_budget_gb: float | None = Field(
        default=None,
        gt=0,
        description="SDQ_MODEL_CACHE_BUDGET_GB: disk the model cache may fill; least recently used models (never"
        " one loaded by a process on this machine) are deleted past it. Unset = no limit.",
    )
    preload_models: CommaList[str] = Field(
        default_factory=list,
        description="SDQ_PRELOAD_MODELS: comma-separated models fetched into the cache and loaded at boot, before"
        " the worker takes jobs (a failure to load one stops the worker).",
    )
    download_concurrency: int = Field(
        default=8, ge=1, le=64, description="SDQ_DOWNLOAD_CONCURRENCY: parallel file downloads per model install."
    )
    max_download_gb: float | None = Field(
        default=200.0,
        gt=0,
        description="SDQ_MAX_DOWNLOAD_GB: the most one model, LoRA or adapter install copies, checked from the"
        " source's file listing before anything is copied; unset = no cap.",
    )
    lora_storage_url: str | None = Field(
        default=None,
        description="SDQ_LORA_STORAGE_URL: storage prefix holding LoRAs by name (`<url>/<name>/*.safetensors`);"
        " a job's bare LoRA name is pulled from there into `<cache>/loras/<name>` on first use.",
    )
    model_memory_budget_gb: float | None = Field(
        default=None,
        gt=0,
        description="SDQ_MODEL_MEMORY_BUDGET_GB: weights kept on the device at once, across loaded pipelines"
        " (least recently used unloaded first); unset = only SDQ_MAX_LOADED_MODELS counts.",
    )
    park_on_cpu: bool = Field(
        default=False,
        description="SDQ_PARK_ON_CPU: a pipeline evicted from the GPU moves to CPU RAM, so switching back to it is"
        " a host-to-device copy instead of a load from disk.",
    )
    max_parked_models: int = Field(
        default=2, ge=0, le=32, description="SDQ_MAX_PARKED_MODELS: pipelines parked in CPU RAM at most."
    )
    max_loaded_loras: int = Field(
        default=8, ge=1, le=64, description="SDQ_MAX_LOADED_LORAS: LoRA adapters kept loaded per pipeline."
    )
    attention: Literal["sdpa", "xformers"] = Field(
        default="sdpa",
        description="SDQ_ATTENTION: `sdpa` (PyTorch scaled-dot-product attention) or `xformers` (when installed;"
        " falls back to SDPA with a warning otherwise).",
    )
    channels_last: bool = Field(
        default=True, description="SDQ_CHANNELS_LAST: channels-last UNet/VAE on CUDA (faster convolutions)."
    )
    compile: bool = Field(
        default=False,
        description="SDQ_COMPILE: torch.compile the UNet of preloaded models, warmed up at boot (models loaded later"
        " for a job run uncompiled: compiling never happens on a job's path).",
    )
    compile_mode: str = Field(
        default="max-autotune-no-cudagraphs", description="SDQ_COMPILE_MODE: the `mode` passed to torch.compile."
    )
    compile_sizes: Annotated[list[tuple[int, int]], NoDecode] = Field(
        default_factory=list,
        description="SDQ_COMPILE_SIZES: image sizes warmed up after compiling, comma-separated `WxH` (e.g."
        " `512x512,1024x1024`); empty: 512x512 and each model's native size. Other sizes compile on first use.",
    )
    compile_schedulers: CommaList[Scheduler] = Field(
        default_factory=list,
        description="SDQ_COMPILE_SCHEDULERS: schedulers jobs use, comma-separated (one warm-up per family of"
        " them); empty: all.",
    )
    vae_slicing: bool = Field(
        default=True, description="SDQ_VAE_SLICING: decode a batch one image at a time (less peak memory)."
    )
    vae_tiling: bool = Field(
        default=True,
        description="SDQ_VAE_TILING: decode images larger than the VAE's native size tile by tile (no effect at"
        " or below it).",
    )

    @field_validator("compile_sizes", mode="before")
    @classmethod
    def _sizes(cls, value: object) -> object:
        items = comma_list(value)
        if not isinstance(items, list):
            return items
        sizes = []
        for item in items:
            if isinstance(item, str):
                width, sep, height = item.lower().partition("x")
                if not sep or not width.strip().isdigit() or not height.strip().isdigit():
                    raise ValueError(f"expected WxH sizes such as 512x512, got {item!r}")
                sizes.append((int(width), int(height)))
            else:
                sizes.append(item)
        return sizes

    @property
    def max_download_bytes(self) -> int | None:
        """`max_download_gb` in bytes (None: no cap)."""
        return None if self.max_download_gb is None else int(self.max_download_gb * 1e9)

    @property
    def model_cache_budget_bytes(self) -> int | None:
        """The disk budget of the model cache in bytes, or None."""
        return None if self.model_cache_budget_gb is None else int(self.model_cache_budget_gb * 1e9)

    @property
    def model_memory_budget_bytes(self) -> int | None:
        """The device-memory budget for loaded weights in bytes, or None."""
        return None if self.model_memory_budget_gb is None else int(self.model_memory_budget_gb * 1e9)
