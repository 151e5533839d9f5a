"""Settings of the SDK and the CLI's client commands (`sdq submit`, `status`, `cancel`, `batch`, `models`)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ClientSettings"]


class ClientSettings(BaseSettings):
    """Settings of the SDK and the CLI's client commands."""

    model_config = SettingsConfigDict(env_prefix="SDQ_", extra="ignore")

    api_url: str = Field(default="http://127.0.0.1:8000", description="SDQ_API_URL: where the API is.")
    api_key: SecretStr | None = Field(default=None, description="SDQ_API_KEY: bearer token for the API.")
