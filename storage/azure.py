"""A store in an Azure Blob container, over azure-storage-blob, which is imported only when a store is built."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import quote, urlencode

from storage.base import DEFAULT_EXPIRY, MAX_EXPIRY, MULTIPART_THRESHOLD_BYTES, ObjectInfo, PutData
from storage.body import md5_digest, open_body
from storage.errors import (
    InvalidKeyError,
    NotSupportedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from storage.expiry import check_expiry
from storage.metadata import validate_metadata
from storage.object_keys import validate_key
from storage.uploads.azure import write_sas
from storage.uploads.base import DEFAULT_UPLOAD_EXPIRY, PresignedUpload

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import BlobProperties, BlobServiceClient, UserDelegationKey

_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_INSTALL_HINT = "the azure backend needs azure-storage-blob and azure-identity: pip install 'sdqueue[azure]'"
# Signatures start a little in the past, so a server whose clock runs behind still accepts a fresh URL.
_CLOCK_SKEW = timedelta(minutes=5)


class AzureBlobStore:
    """Objects under `az://account/container/prefix/`; presigns SAS URLs; retries with exponential backoff.

    Credentials, in order: a connection string, the account key, else a `TokenCredential` (by default
    `DefaultAzureCredential`: environment, workload or managed identity, Azure CLI). Presigned URLs are
    account-key SAS with a key, and user-delegation SAS with an Azure AD credential; they never carry the key.
    Integrity: each request's body is MD5-checked by the service (`validate_content`), and small blobs also
    store their whole MD5. Blobs above the threshold go up as blocks, `max_concurrency` at a time.
    """

    def __init__(
        self,
        account: str,
        container: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        connection_string: str | None = None,
        account_key: str | None = None,
        credential: TokenCredential | None = None,
        max_attempts: int = 5,
        multipart_threshold_bytes: int = MULTIPART_THRESHOLD_BYTES,
        block_size_bytes: int = 4 * 1024 * 1024,
        max_concurrency: int = 8,
    ) -> None:
        """`endpoint_url` is the blob service URL (default `https://<account>.blob.core.windows.net`); for
        Azurite, `http://127.0.0.1:10000/<account>`. Give at most one of `connection_string`, `account_key`
        and `credential`; with none, `DefaultAzureCredential` is used.
        """
        if not _ACCOUNT.fullmatch(account):
            raise StorageConfigError(f"Azure storage account names are 3-24 of [a-z0-9]; got {account!r}")
        if not _CONTAINER.fullmatch(container):
            raise StorageConfigError(f"Azure container names are 3-63 of [a-z0-9-], no '--'; got {container!r}")
        if sum(value is not None for value in (connection_string, account_key, credential)) > 1:
            raise StorageConfigError("give at most one of connection_string, account_key, credential")
        prefix = prefix.strip("/")
        try:
            validate_key(prefix or "-")
        except InvalidKeyError as exc:
            raise StorageConfigError(f"bad Azure prefix {prefix!r}: {exc}") from None
        self.account = account
        self.container = container
        self.prefix = prefix
        query = urlencode({"endpoint_url": endpoint_url} if endpoint_url else {})
        path = quote(f"{container}/{prefix}".rstrip("/"), safe="/")
        self.url = f"az://{account}/{path}" + (f"?{query}" if query else "")
        self._put_options = {
            "max_single_put_size": multipart_threshold_bytes,
            "max_block_size": block_size_bytes,
        }
        self._max_concurrency = max_concurrency
        self._service = _make_service(
            account, endpoint_url, connection_string, account_key, credential, max_attempts, self._put_options
        )
        self._container = self._service.get_container_client(container)
        self._delegation_lock = threading.Lock()
        self._delegation_key: UserDelegationKey | None = None
        self._delegation_expiry = datetime.min.replace(tzinfo=timezone.utc)

    def __repr__(self) -> str:
        return f"AzureBlobStore({self.url!r})"

    def close(self) -> None:
        """Close the pooled HTTP connections; the store must not be used afterwards."""
        self._service.close()

    def put(
        self,
        key: str,
        data: PutData,
        *,
        content_type: str,
        content_disposition: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `data` under `key`, replacing any blob there; returns what was stored."""
        from azure.storage.blob import ContentSettings

        blob = self._container.get_blob_client(self._full_key(key))
        checked = validate_metadata(metadata)
        with open_body(data, threshold_bytes=self._put_options["max_single_put_size"]) as body:
            settings = ContentSettings(content_type=content_type, content_disposition=content_disposition)
            if body.data is not None:
                settings.content_md5 = bytearray(md5_digest(body.data))
            with self._errors(key):
                result = blob.upload_blob(
                    body.data if body.data is not None else cast("BinaryIO", body.file),
                    length=body.size,
                    overwrite=True,
                    content_settings=settings,
                    metadata=checked,
                    validate_content=True,
                    max_concurrency=self._max_concurrency,
                )
        if body.data is None:
            return self.head(key)
        return ObjectInfo(
            key=key,
            size=len(body.data),
            content_type=content_type,
            etag=str(result.get("etag", "")).strip('"') or None,
            last_modified=result.get("last_modified"),
            metadata=checked,
            content_disposition=content_disposition,
        )

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises `ObjectNotFoundError` when there are none."""
        return self._read(key, None)

    def get_at_most(self, key: str, max_bytes: int) -> bytes:
        """`storage.base.BoundedReader`: the download's first request (at most the client's single-get size, 32 MiB
        by default) learns the blob's size; a larger blob is read no further."""
        return self._read(key, max_bytes)

    def _read(self, key: str, max_bytes: int | None) -> bytes:
        blob = self._container.get_blob_client(self._full_key(key))
        with self._errors(key):
            download = blob.download_blob(max_concurrency=self._max_concurrency)
            if max_bytes is not None and (size := int(download.properties.size)) > max_bytes:
                raise ObjectTooLargeError(key, size, max_bytes)
            return download.readall()

    def get_into(self, key: str, file: BinaryIO) -> int:
        """Write the bytes of `key` into `file`, in parallel ranged reads when large; returns how many."""
        blob = self._container.get_blob_client(self._full_key(key))
        with self._errors(key):
            return int(blob.download_blob(max_concurrency=self._max_concurrency).readinto(file))

    def head(self, key: str) -> ObjectInfo:
        """Size, type, disposition and metadata of `key`; raises `ObjectNotFoundError` when absent."""
        blob = self._container.get_blob_client(self._full_key(key))
        with self._errors(key):
            return self._info(key, blob.get_blob_properties())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Blobs whose key starts with `prefix`, in key order (as the service lists them)."""
        if prefix:
            validate_key(prefix.rstrip("/") or "-")
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(prefix or "/"):
            for properties in self._container.list_blobs(name_starts_with=full_prefix or None):
                yield self._info(properties.name[strip:], properties)

    def delete(self, key: str) -> None:
        """Remove `key` and its snapshots; deleting an absent key is not an error."""
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._container.get_blob_client(self._full_key(key))
        with self._errors(key):
            try:
                blob.delete_blob(delete_snapshots="include")
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise

    def presign_get(self, key: str, *, expires_in: timedelta = DEFAULT_EXPIRY) -> str:
        """A read-only SAS URL for `key` that expires after `expires_in` (at most 7 days, HTTPS-or-HTTP)."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        full_key = self._full_key(key)
        expires_in_s = check_expiry(expires_in, MAX_EXPIRY)
        now = datetime.now(timezone.utc)
        expiry = now + timedelta(seconds=expires_in_s)
        signing = self._sas_signing(key, now, expiry)
        with self._errors(key):
            sas = generate_blob_sas(
                self.account,
                self.container,
                full_key,
                permission=BlobSasPermissions(read=True),
                start=now - _CLOCK_SKEW,
                expiry=expiry,
                **signing,
            )
        return f"{self._blob_url(full_key)}?{sas}"

    def presign_upload(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: timedelta = DEFAULT_UPLOAD_EXPIRY
    ) -> PresignedUpload:
        """A create/write SAS for `key` alone (see `storage.uploads.azure`: Azure cannot bound its size)."""
        full_key = self._full_key(key)
        expires_in_s = check_expiry(expires_in, MAX_EXPIRY)
        now = datetime.now(timezone.utc)
        expiry = now + timedelta(seconds=expires_in_s)
        signing = self._sas_signing(key, now, expiry)
        with self._errors(key):
            return write_sas(
                self._blob_url(full_key),
                self.account,
                self.container,
                full_key,
                content_type=content_type,
                max_bytes=max_bytes,
                start=now - _CLOCK_SKEW,
                expiry=expiry,
                signing=signing,
            )

    def _blob_url(self, full_key: str) -> str:
        # The blob URL as the SDK quotes it, without building a BlobClient (a pipeline) per URL.
        return f"{self._container.url.rstrip('/')}/{quote(full_key, safe='~/')}"

    def _sas_signing(self, key: str, now: datetime, expiry: datetime) -> dict[str, Any]:
        """What signs a SAS: the account key, else a user-delegation key from the Azure AD credential."""
        credential = self._service.credential
        if getattr(credential, "account_key", None):
            return {"account_key": credential.account_key}
        if hasattr(credential, "get_token"):
            return {"user_delegation_key": self._user_delegation_key(key, now, expiry)}
        raise NotSupportedError(
            f"{self.url} is reached with a SAS token, which cannot mint new SAS URLs;"
            " use an account key or an Azure AD credential"
        )

    def _user_delegation_key(self, key: str, now: datetime, expiry: datetime) -> UserDelegationKey:
        # One delegation key serves many URLs: ask for a fresh one (valid 7 days, Azure's limit) only when the
        # cached one would die before this URL does.
        with self._delegation_lock:
            if self._delegation_key is None or self._delegation_expiry < expiry:
                key_expiry = now + MAX_EXPIRY
                with self._errors(key):
                    self._delegation_key = self._service.get_user_delegation_key(now - _CLOCK_SKEW, key_expiry)
                self._delegation_expiry = key_expiry
            return self._delegation_key

    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _info(self, key: str, properties: BlobProperties) -> ObjectInfo:
        settings = properties.content_settings
        return ObjectInfo(
            key=key,
            size=int(properties.size),
            content_type=settings.content_type,
            etag=str(properties.etag or "").strip('"') or None,
            last_modified=properties.last_modified,
            metadata=dict(properties.metadata or {}),
            content_disposition=settings.content_disposition,
        )

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

        try:
            yield
        except ClientAuthenticationError as exc:
            raise StoragePermissionError(f"access to {key!r} in {self.url} denied: {_message(exc)}") from exc
        except HttpResponseError as exc:
            raise _translate(exc, self.url, key) from exc
        except AzureError as exc:  # connection errors, timeouts, credential failures (after the SDK's retries)
            if type(exc).__name__ == "CredentialUnavailableError":
                raise StorageConfigError(f"no usable Azure credential for {self.url}: {_message(exc)}") from exc
            raise StorageError(f"Azure request for {key!r} in {self.url} failed: {_message(exc)}") from exc


def _code(exc: HttpResponseError) -> str:
    return str(getattr(exc, "error_code", None) or "")


def _message(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _translate(exc: HttpResponseError, url: str, key: str) -> StorageError:
    code = _code(exc)
    status = exc.status_code
    detail = f"{code or status}: {_message(exc)}"
    if code == "ContainerNotFound":
        return StorageConfigError(f"the container of {url} does not exist ({detail})")
    if status == 404:
        return ObjectNotFoundError(f"no object {key!r} in {url}")
    if status == 403 or code.startswith("AuthorizationPermission") or code == "AuthenticationFailed":
        return StoragePermissionError(f"access to {key!r} in {url} denied ({detail})")
    return StorageError(f"Azure request for {key!r} in {url} failed ({detail})")


def _transport() -> Any:
    """azure-core's requests transport with room for parallel blocks and puts (requests' pool holds 10)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    session = requests.Session()
    # As azure-core's own adapter: its retry policy retries, urllib3 must not.
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=4, pool_maxsize=32, max_retries=Retry(total=False, redirect=False, raise_on_status=False)
    )
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return RequestsTransport(session=session, session_owner=True)


def _make_service(
    account: str,
    endpoint_url: str | None,
    connection_string: str | None,
    account_key: str | None,
    credential: TokenCredential | None,
    max_attempts: int,
    put_options: Mapping[str, int],
) -> BlobServiceClient:
    try:
        from azure.storage.blob import BlobServiceClient, ExponentialRetry
    except ImportError as exc:
        raise StorageConfigError(_INSTALL_HINT) from exc
    options: dict[str, Any] = {
        **put_options,
        "transport": _transport(),
        # The SDK's default waits 15 s before its first retry; 1 s, 3 s, 5 s, 9 s suit interactive job latency.
        "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=max_attempts - 1),
    }
    try:
        if connection_string is not None:
            service = BlobServiceClient.from_connection_string(connection_string, **options)
            if service.account_name != account:
                raise StorageConfigError(
                    f"the connection string is for account {service.account_name!r}, the URL names {account!r}"
                )
            if endpoint_url:
                service = BlobServiceClient(endpoint_url, credential=service.credential, **options)
            return service
        account_url = endpoint_url or f"https://{account}.blob.core.windows.net"
        if account_key is not None:
            return BlobServiceClient(
                account_url, credential={"account_name": account, "account_key": account_key}, **options
            )
        if credential is None:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError as exc:
                raise StorageConfigError(_INSTALL_HINT) from exc
            credential = DefaultAzureCredential()
        return BlobServiceClient(account_url, credential=credential, **options)
    except StorageConfigError:
        raise
    except ValueError as exc:  # a malformed connection string, URL or key
        raise StorageConfigError(f"cannot build an Azure Blob client for {account!r}: {exc}") from exc
