"""Setting types and mixins more than one deployable shares: comma-separated lists and the cloud endpoints.

`producer.settings` re-exports them; the worker's settings (gpu_worker/settings.py) mix them in as well.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["CloudEndpointSettings", "CommaList", "comma_list"]


def comma_list(value: object) -> object:
    """A settings validator's input, with a comma-separated string (as the environment gives it) split into a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


_Item = TypeVar("_Item")
#: A list setting the environment gives as `a, b, c` (not as JSON): `hosts: CommaList[str]`.
CommaList = Annotated[list[_Item], NoDecode, BeforeValidator(comma_list)]


class CloudEndpointSettings(BaseSettings):
    """The cloud APIs both the controller (to scale a group) and the worker (to retire its own VM) call: each
    deployable reads the same variables, so one override points both at a test server or a private endpoint."""

    model_config = SettingsConfigDict(env_prefix="SDQ_", extra="ignore")

    aws_endpoint_url: str | None = Field(
        default=None, description="SDQ_AWS_ENDPOINT_URL: another Auto Scaling API endpoint (tests, VPC endpoints)."
    )
    azure_management_url: str = Field(
        default="https://management.azure.com",
        description="SDQ_AZURE_MANAGEMENT_URL: Azure Resource Manager (other clouds, tests).",
    )
    gcp_compute_url: str = Field(
        default="https://compute.googleapis.com", description="SDQ_GCP_COMPUTE_URL: the Compute Engine API (tests)."
    )
