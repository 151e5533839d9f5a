"""Settings for each deployable, read once from `SDQ_*` environment variables at the entry point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .cost import InstancePrice
from .inputs.limits import InputSettings
from .loopback import is_loopback_host
from .setting_types import CloudEndpointSettings, CommaList
from .streamslots import StreamLimits

if TYPE_CHECKING:
    from storage import StorageCredentials

_DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "sdqueue"


class CommonSettings(BaseSettings):
    """What the API, the worker and the CLI share. Each field names its environment variable."""

    model_config = SettingsConfigDict(env_prefix="SDQ_", extra="ignore")

    redis_url: str | None = Field(
        default=None, description="SDQ_REDIS_URL: Redis for the queue and job records; unset = embedded Redis."
    )
    storage_url: str | None = Field(
        default=None,
        description="SDQ_STORAGE_URL: where images go (`s3://bucket/prefix`, `file:///path`); unset = local files.",
    )
    data_dir: Path = Field(
        default=_DEFAULT_DATA_DIR,
        description="SDQ_DATA_DIR: embedded Redis data, local objects, the link-signing key.",
    )
    model_cache_dir: Path | None = Field(
        default=None, description="SDQ_MODEL_CACHE_DIR: local (NVMe) model cache; default `<data_dir>/models`."
    )
    default_model: str = Field(default="tiny", description="SDQ_DEFAULT_MODEL: model for jobs that name none.")
    model_catalog: Path | None = Field(
        default=None,
        description="SDQ_MODEL_CATALOG: a YAML or JSON file of the model names clients use, with each one's source,"
        " family, defaults and limits (the shape of `producer/catalog.yaml`, the built-in one used when unset); the"
        " API and every worker must read the same file.",
    )
    queue: str = Field(default="sdq-generate", description="SDQ_QUEUE: the Dramatiq queue jobs travel on.")
    batch_queue: str = Field(
        default="sdq-batch",
        description="SDQ_BATCH_QUEUE: the queue of batch jobs; workers take interactive jobs (SDQ_QUEUE) first.",
    )
    max_attempts: int = Field(
        default=3, ge=1, le=20, description="SDQ_MAX_ATTEMPTS: runs of one job (crashes included) before it fails."
    )
    heartbeat_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="SDQ_HEARTBEAT_TIMEOUT_S: silence after which a worker counts as dead and its jobs return.",
    )
    job_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="SDQ_JOB_TTL_S: how long finished job records are kept."
    )
    signing_secret: SecretStr | None = Field(
        default=None,
        description="SDQ_SIGNING_SECRET: key for local-storage download links; unset = generated in data_dir.",
    )
    # Explicit storage secrets; unset ones leave each SDK's own chain (AWS_*/profile/role, DefaultAzureCredential,
    # Google application default credentials) to find credentials.
    storage_aws_access_key_id: SecretStr | None = Field(
        default=None, description="SDQ_STORAGE_AWS_ACCESS_KEY_ID: S3 access key id (with the secret key below)."
    )
    storage_aws_secret_access_key: SecretStr | None = Field(
        default=None, description="SDQ_STORAGE_AWS_SECRET_ACCESS_KEY: S3 secret access key."
    )
    storage_aws_session_token: SecretStr | None = Field(
        default=None, description="SDQ_STORAGE_AWS_SESSION_TOKEN: S3 session token, for temporary keys."
    )
    storage_azure_connection_string: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SDQ_STORAGE_AZURE_CONNECTION_STRING", "AZURE_STORAGE_CONNECTION_STRING"),
        description="SDQ_STORAGE_AZURE_CONNECTION_STRING (or AZURE_STORAGE_CONNECTION_STRING): an Azure Storage"
        " connection string for `az://` URLs.",
    )
    storage_azure_account_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SDQ_STORAGE_AZURE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"),
        description="SDQ_STORAGE_AZURE_ACCOUNT_KEY (or AZURE_STORAGE_KEY): the storage account's shared key.",
    )
    storage_gcs_service_account_json: SecretStr | None = Field(
        default=None,
        description="SDQ_STORAGE_GCS_SERVICE_ACCOUNT_JSON: a service-account key file's JSON content, for `gs://`.",
    )

    webhook_https_only: bool = Field(
        default=True,
        description="SDQ_WEBHOOK_HTTPS_ONLY: webhooks go to https URLs only (allow-listed development hosts excepted).",
    )
    webhook_queue: str = Field(default="sdq-webhooks", description="SDQ_WEBHOOK_QUEUE: the delivery queue.")
    webhook_allow: CommaList[str] = Field(
        default_factory=list,
        description="SDQ_WEBHOOK_ALLOW: comma-separated hosts and CIDRs webhooks may reach even though they are"
        " private or loopback (development only, e.g. `127.0.0.1/32`); empty = public addresses only.",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        # Checked here, so that a typo fails as this setting at start, not deep in the Redis client.
        if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL (unset = the embedded Redis)")
        return value

    @property
    def resolved_model_cache_dir(self) -> Path:
        """The model cache directory, defaulting under the data directory."""
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def resolved_storage_url(self) -> str:
        """The storage URL, defaulting to local files under the data directory."""
        return self.storage_url or (self.data_dir / "objects").resolve().as_uri()

    def storage_credentials(self) -> StorageCredentials:
        """The explicit storage secrets, for `storage.open_store(..., credentials=)`."""
        from storage import StorageCredentials

        def reveal(secret: SecretStr | None) -> str | None:
            return secret.get_secret_value() if secret is not None else None

        return StorageCredentials(
            aws_access_key_id=reveal(self.storage_aws_access_key_id),
            aws_secret_access_key=reveal(self.storage_aws_secret_access_key),
            aws_session_token=reveal(self.storage_aws_session_token),
            azure_connection_string=reveal(self.storage_azure_connection_string),
            azure_account_key=reveal(self.storage_azure_account_key),
            gcs_service_account_json=reveal(self.storage_gcs_service_account_json),
        )


class FleetSettings(BaseSettings):
    """The GPU fleet as the API and the controller see it: its scaling bounds and its prices."""

    model_config = SettingsConfigDict(env_prefix="SDQ_", extra="ignore")

    min_workers: int = Field(default=0, ge=0, description="SDQ_MIN_WORKERS: workers kept even with no work.")
    max_workers: int = Field(default=10, ge=0, description="SDQ_MAX_WORKERS: the most workers ever asked for.")
    worker_concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="SDQ_WORKER_CONCURRENCY: jobs one worker holds at once, i.e. its SDQ_WORKER_THREADS (default 8);"
        " desired workers = ceil(work remaining ÷ this). Too low asks for a VM per job that then idles, billed.",
    )
    prices: dict[str, InstancePrice] = Field(
        default_factory=dict,
        description='SDQ_PRICES: JSON {"instance type": {"spot": usd_per_h, "on_demand": usd_per_h}}; overrides'
        " entries of SDQ_PRICES_FILE.",
    )
    prices_file: Path | None = Field(
        default=None, description="SDQ_PRICES_FILE: a JSON file with the same shape as SDQ_PRICES."
    )

    @model_validator(mode="after")
    def _bounds(self) -> FleetSettings:
        if self.min_workers > self.max_workers:
            raise ValueError(f"SDQ_MIN_WORKERS ({self.min_workers}) exceeds SDQ_MAX_WORKERS ({self.max_workers})")
        return self


class ApiSettings(CommonSettings, FleetSettings, InputSettings):
    """Settings of `sdq api`."""

    host: str = Field(default="127.0.0.1", description="SDQ_HOST: address the API listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="SDQ_PORT: port the API listens on.")
    public_url: str | None = Field(
        default=None,
        description="SDQ_PUBLIC_URL: base URL clients reach the API at (for local download links);"
        " default `http://<host>:<port>`.",
    )
    url_expiry_s: int = Field(
        default=3600, gt=0, le=7 * 24 * 3600, description="SDQ_URL_EXPIRY_S: lifetime of presigned output URLs."
    )
    allowed_models: CommaList[str] = Field(
        default_factory=list,
        description="SDQ_ALLOWED_MODELS: comma-separated models clients may ask for, `@catalog` standing for every"
        " name in the model catalog (`@catalog` alone: the catalog's models only); empty = any.",
    )
    allowed_loras: CommaList[str] = Field(
        default_factory=list,
        description="SDQ_ALLOWED_LORAS: comma-separated LoRAs clients may ask for: names, hub ids, glob patterns"
        " (`myorg/*`) and prefixes ending in `/` (`s3://bucket/loras/`); empty = any hub id or cache name, and paths"
        " or storage URLs only where SDQ_JOB_SOURCES is `open`.",
    )
    job_sources: Literal["auto", "open", "strict"] = Field(
        default="auto",
        description="SDQ_JOB_SOURCES: `strict` = a job's model, LoRA or adapter may be a path or storage URL only"
        " when SDQ_ALLOWED_MODELS / SDQ_ALLOWED_LORAS allow-list it; `open` = any; `auto` = strict wherever API keys"
        " are required.",
    )
    auth: Literal["auto", "open", "required"] = Field(
        default="auto",
        description="SDQ_AUTH: `required` = every /v1 call needs an API key (`sdq keys create`); `open` = no keys,"
        " one tenant (allowed only on a loopback address); `auto` = open on loopback, required otherwise.",
    )
    rate_limit_per_s: float = Field(
        default=100.0, ge=0, description="SDQ_RATE_LIMIT_PER_S: default requests/s per API key; 0 = unlimited."
    )
    rate_limit_burst: int = Field(
        default=200, ge=1, description="SDQ_RATE_LIMIT_BURST: default requests per API key allowed at once."
    )
    max_queued_jobs: int = Field(
        default=100_000, ge=0, description="SDQ_MAX_QUEUED_JOBS: default queued jobs per API key; 0 = unlimited."
    )
    max_batch_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="SDQ_MAX_BATCH_BYTES: largest body `POST /v1/batches` accepts (other routes: 1 MiB).",
    )
    inbound_webhook_secrets: CommaList[SecretStr] = Field(
        default_factory=list,
        description="SDQ_INBOUND_WEBHOOK_SECRETS: comma-separated `whsec_…` secrets that `POST /v1/hooks/jobs`"
        " accepts signatures from (several during a rotation); empty = that endpoint is off.",
    )
    api_workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="SDQ_API_WORKERS: API server processes sharing the port (each one event loop, each its own socket:"
        " the kernel spreads connections over them); default 1 on a"
        " loopback address or with the embedded Redis, else one per CPU this process may use (set it explicitly"
        " under a CPU quota, e.g. a Kubernetes CPU limit, which the default cannot see).",
    )

    max_streams_per_key: int = Field(
        default=16,
        ge=0,
        description="SDQ_MAX_STREAMS_PER_KEY: event streams (`/v1/jobs/{id}/events`, `/v1/events`) one API key may"
        " hold open at once over every API process (in open mode: one client address); beyond it 429"
        " `too_many_streams`; 0 = no cap.",
    )
    max_stream_s: float = Field(
        default=300.0,
        gt=0,
        description="SDQ_MAX_STREAM_S: an event stream ends after this long; clients reconnect with `Last-Event-ID`"
        " (so a forgotten tab or client cannot hold a stream, and its slot, forever).",
    )
    stream_heartbeat_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="SDQ_STREAM_HEARTBEAT_S: how often each open stream's slot is refreshed and its key re-checked: a"
        " revoked key's streams end within about this long, a crashed API process's slots are freed after 3 × it.",
    )
    api_limit_concurrency: int = Field(
        default=1000,
        ge=1,
        description="SDQ_API_LIMIT_CONCURRENCY: connections and tasks one API process serves at once (uvicorn's"
        " `limit_concurrency`, open streams included); beyond it uvicorn itself answers 503.",
    )
    api_backlog: int = Field(
        default=2048,
        ge=1,
        description="SDQ_API_BACKLOG: connections waiting to be accepted (the listen backlog, uvicorn's `backlog`).",
    )
    api_reuse_port: bool = Field(
        default=True,
        description="SDQ_API_REUSE_PORT: with several API processes, each listens on its own socket (SO_REUSEPORT,"
        " Linux) and the kernel spreads connections evenly over them; off, they share one socket and the process"
        " that wakes first takes every waiting connection (uneven under keep-alive clients, but a process that"
        " stalls gets no new connections). See producer/serve.py.",
    )

    def stream_limits(self) -> StreamLimits:
        """The event streams' bounds these settings give."""
        return StreamLimits(self.max_streams_per_key, self.max_stream_s, self.stream_heartbeat_s)

    @property
    def resolved_api_workers(self) -> int:
        """How many API processes to run: `api_workers`, else the default its description gives."""
        if self.api_workers is not None:
            return self.api_workers
        loopback = is_loopback_host(self.host)
        if loopback or self.redis_url is None:
            return 1
        # The CPUs this process may run on (a cpuset narrows them), not every CPU of the host.
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    @property
    def auth_required(self) -> bool:
        """Whether API keys are required; raises `ValueError` for `open` on a non-loopback address."""
        loopback = is_loopback_host(self.host)
        if self.auth == "open" and not loopback:
            raise ValueError(f"SDQ_AUTH=open is allowed only on a loopback address, not {self.host!r}")
        return self.auth == "required" or (self.auth == "auto" and not loopback)

    @property
    def strict_sources(self) -> bool:
        """Whether job-supplied paths and storage URLs need an allow-list entry (`job_sources`)."""
        return self.job_sources == "strict" or (self.job_sources == "auto" and self.auth_required)

    @property
    def resolved_public_url(self) -> str:
        """Base URL for links the API hands out."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


class ControllerSettings(CommonSettings, FleetSettings, CloudEndpointSettings):
    """Settings of `sdq controller`: the provider it drives, its clocks, and the janitor's patience."""

    provider: Literal["none", "aws", "azure", "gcp", "kubernetes"] = Field(
        default="none",
        description="SDQ_PROVIDER: what to scale: an AWS Auto Scaling group, an Azure VM Scale Set, a GCP managed"
        " instance group, `kubernetes` (KEDA reads GET /v1/scaling; nothing to drive) or `none`.",
    )
    controller_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="SDQ_CONTROLLER_INTERVAL_S: how often work is read and capacity decided."
    )
    scale_cooldown_s: float = Field(
        default=15.0, ge=0, description="SDQ_SCALE_COOLDOWN_S: least time between two capacity raises."
    )
    capacity_refresh_s: float = Field(
        default=30.0,
        gt=0,
        description="SDQ_CAPACITY_REFRESH_S: how often the provider's capacity is re-read when no raise is due"
        " (workers retiring themselves lower it).",
    )
    maintenance_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="SDQ_MAINTENANCE_INTERVAL_S: how often dead workers' messages are requeued; default a quarter"
        " of SDQ_HEARTBEAT_TIMEOUT_S.",
    )
    janitor_interval_s: float = Field(
        default=5.0, gt=0, description="SDQ_JANITOR_INTERVAL_S: how often expired leases and lost messages are sought."
    )
    lease_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="SDQ_LEASE_GRACE_S: a running job is taken back only this long after its lease expired.",
    )
    lost_message_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="SDQ_LOST_MESSAGE_GRACE_S: a queued job must lack a queue message this long (over two sweeps)"
        " before it is re-enqueued.",
    )
    controller_metrics_port: int | None = Field(
        default=9108,
        ge=0,
        le=65535,
        description="SDQ_CONTROLLER_METRICS_PORT: Prometheus metrics port of the controller; empty = no server.",
    )
    controller_metrics_host: str = Field(
        default="0.0.0.0", description="SDQ_CONTROLLER_METRICS_HOST: address the metrics server binds."
    )
    aws_asg_name: str | None = Field(default=None, description="SDQ_AWS_ASG_NAME: the GPU Auto Scaling group.")
    aws_region: str | None = Field(default=None, description="SDQ_AWS_REGION: its region; default boto3's.")
    azure_subscription_id: str | None = Field(default=None, description="SDQ_AZURE_SUBSCRIPTION_ID.")
    azure_resource_group: str | None = Field(default=None, description="SDQ_AZURE_RESOURCE_GROUP.")
    azure_vmss_name: str | None = Field(default=None, description="SDQ_AZURE_VMSS_NAME: the GPU VM Scale Set.")
    gcp_project: str | None = Field(default=None, description="SDQ_GCP_PROJECT.")
    gcp_zone: str | None = Field(default=None, description="SDQ_GCP_ZONE: zone of a zonal managed instance group.")
    gcp_region: str | None = Field(
        default=None, description="SDQ_GCP_REGION: region of a regional managed instance group (instead of a zone)."
    )
    gcp_mig_name: str | None = Field(default=None, description="SDQ_GCP_MIG_NAME: the GPU managed instance group.")

    @field_validator("controller_metrics_port", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _provider_named(self) -> ControllerSettings:
        required = {
            "aws": ("aws_asg_name",),
            "azure": ("azure_subscription_id", "azure_resource_group", "azure_vmss_name"),
            "gcp": ("gcp_project", "gcp_mig_name"),
        }.get(self.provider, ())
        missing = [f"SDQ_{name.upper()}" for name in required if not getattr(self, name)]
        if self.provider == "gcp" and not (self.gcp_zone or self.gcp_region):
            missing.append("SDQ_GCP_ZONE or SDQ_GCP_REGION")
        if missing:
            raise ValueError(f"SDQ_PROVIDER={self.provider} needs {', '.join(missing)}")
        return self

    @property
    def resolved_maintenance_interval_s(self) -> float:
        """Maintenance period: a quarter heartbeat timeout, so dead workers' messages return within 1.25 × it."""
        return self.maintenance_interval_s or self.heartbeat_timeout_s / 4
