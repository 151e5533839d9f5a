"""Explicit secrets for the cloud backends, passed to `open_store` by whoever read the settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from storage.errors import StorageConfigError


@dataclass(frozen=True)
class StorageCredentials:
    """Secrets that take precedence over each SDK's own chain; every field is optional and kept out of `repr`.

    Unset fields leave that backend to its SDK's standard chain: boto3's (environment, profile, instance role),
    Azure's `DefaultAzureCredential` (environment, workload identity, managed identity, Azure CLI), and Google's
    application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, metadata server).
    """

    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    #: A full Azure Storage connection string (account name, key or SAS, endpoints).
    azure_connection_string: str | None = field(default=None, repr=False)
    #: The storage account's shared key (base64); the account name comes from the `az://` URL.
    azure_account_key: str | None = field(default=None, repr=False)
    #: A Google service-account key file's JSON content.
    gcs_service_account_json: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise StorageConfigError("give both the AWS access key id and the secret access key, or neither")
        if self.aws_session_token and not self.aws_access_key_id:
            raise StorageConfigError("an AWS session token needs the access key id and secret access key too")
        if self.azure_connection_string and self.azure_account_key:
            raise StorageConfigError("give either an Azure connection string or an account key, not both")

    def gcs_service_account_info(self) -> dict[str, Any] | None:
        """The parsed service-account key, or None; raises `StorageConfigError` if it is not one."""
        if not self.gcs_service_account_json:
            return None
        try:
            info = json.loads(self.gcs_service_account_json)
        except ValueError:
            raise StorageConfigError("the GCS service-account key is not valid JSON") from None
        if not isinstance(info, dict) or not {"client_email", "private_key"} <= set(info):
            raise StorageConfigError("the GCS service-account key needs client_email and private_key")
        return info
