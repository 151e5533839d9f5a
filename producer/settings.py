"""Settings for each deployable, read once from `SDQ_*` environment variables at the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    queue: str = Field(default="sdq-generate", description="SDQ_QUEUE: the Dramatiq queue jobs travel on.")
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

    @property
    def resolved_model_cache_dir(self) -> Path:
        """The model cache directory, defaulting under the data directory."""
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def resolved_storage_url(self) -> str:
        """The storage URL, defaulting to local files under the data directory."""
        return self.storage_url or (self.data_dir / "objects").resolve().as_uri()


class ApiSettings(CommonSettings):
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
    allowed_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="SDQ_ALLOWED_MODELS: comma-separated models clients may ask for; empty = any.",
    )

    @property
    def resolved_public_url(self) -> str:
        """Base URL for links the API hands out."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        # Comma-separated in the environment; a list in code.
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


class ClientSettings(BaseSettings):
    """Settings of the SDK and the CLI's client commands."""

    model_config = SettingsConfigDict(env_prefix="SDQ_", extra="ignore")

    api_url: str = Field(default="http://127.0.0.1:8000", description="SDQ_API_URL: where the API is.")
    api_key: SecretStr | None = Field(default=None, description="SDQ_API_KEY: bearer token for the API.")
