"""A store in a Google Cloud Storage bucket, over google-cloud-storage, which is imported only when a store is built."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, urlencode

from storage.base import DEFAULT_EXPIRY, MAX_EXPIRY, MULTIPART_THRESHOLD_BYTES, ObjectInfo, PutData
from storage.body import open_body
from storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from storage.expiry import check_expiry
from storage.metadata import validate_metadata
from storage.object_keys import validate_key
from storage.uploads.base import DEFAULT_UPLOAD_EXPIRY, PresignedUpload
from storage.uploads.gcs import signed_put

if TYPE_CHECKING:
    from google.api_core.exceptions import GoogleAPICallError
    from google.auth.credentials import Credentials
    from google.cloud.storage import Blob, Bucket, Client

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_INSTALL_HINT = "the gcs backend needs google-cloud-storage: pip install 'sdqueue[gcp]'"
_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_PUBLIC_ENDPOINT = "https://storage.googleapis.com"


class GcsStore:
    """Objects under `gs://bucket/prefix/`; presigns V4 signed URLs; retries with google-api-core's backoff.

    Credentials: a service-account key when given, else application default credentials (environment, metadata
    server). URLs are signed locally with a key, or through IAM `signBlob` when the credentials are only tokens
    (then the service account needs `iam.serviceAccounts.signBlob` on itself). Integrity: uploads carry a CRC32C
    that the service checks; objects above the threshold go up as resumable uploads in chunks. `anonymous`
    sends requests without credentials (emulators, public buckets) and still signs with the key if one is given.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        service_account_info: Mapping[str, Any] | None = None,
        credentials: Credentials | None = None,
        project: str | None = None,
        anonymous: bool = False,
        max_attempts_s: float = 120.0,
        multipart_threshold_bytes: int = MULTIPART_THRESHOLD_BYTES,
        max_concurrency: int = 8,
    ) -> None:
        """`endpoint_url` replaces `https://storage.googleapis.com` for requests and signed URLs (emulators,
        private endpoints). `max_attempts_s` bounds the time spent retrying one request.
        """
        if not _BUCKET.fullmatch(bucket):
            raise StorageConfigError(f"GCS bucket names are 3-222 of [a-z0-9._-]; got {bucket!r}")
        if service_account_info is not None and credentials is not None:
            raise StorageConfigError("give either service_account_info or credentials, not both")
        prefix = prefix.strip("/")
        try:
            validate_key(prefix or "-")
        except InvalidKeyError as exc:
            raise StorageConfigError(f"bad GCS prefix {prefix!r}: {exc}") from None
        self.bucket_name = bucket
        self.prefix = prefix
        options = {"endpoint_url": endpoint_url, "anonymous": "true" if anonymous else None}
        query = urlencode({name: value for name, value in options.items() if value})
        self.url = f"gs://{bucket}/{quote(prefix, safe='/')}".rstrip("/") + (f"?{query}" if query else "")
        self._endpoint = (endpoint_url or _PUBLIC_ENDPOINT).rstrip("/")
        self._threshold_bytes = multipart_threshold_bytes
        self._max_concurrency = max_concurrency
        try:
            from google.cloud.storage.retry import DEFAULT_RETRY
        except ImportError as exc:
            raise StorageConfigError(_INSTALL_HINT) from exc
        # Every put overwrites a deterministic key, so retrying one is safe: the SDK retries uploads only when
        # told so, since in general a blind retry could clobber a newer write.
        self._retry = DEFAULT_RETRY.with_timeout(max_attempts_s)
        self._signing_lock = threading.Lock()
        self._client, self._signer = _make_client(endpoint_url, service_account_info, credentials, project, anonymous)
        self._bucket: Bucket = self._client.bucket(bucket)

    def __repr__(self) -> str:
        return f"GcsStore({self.url!r})"

    def close(self) -> None:
        """Close the pooled HTTP connections; the store must not be used afterwards."""
        self._client.close()

    def put(
        self,
        key: str,
        data: PutData,
        *,
        content_type: str,
        content_disposition: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `data` under `key`, replacing any object there; returns what was stored."""
        blob = self._blob(key)
        blob.metadata = validate_metadata(metadata) or None
        blob.content_disposition = content_disposition
        with open_body(data, threshold_bytes=self._threshold_bytes) as body, self._errors(key):
            if body.data is not None:
                blob.upload_from_string(body.data, content_type=content_type, checksum="crc32c", retry=self._retry)
                _check_crc32c(blob, body.data, self.url, key)
            else:
                blob.chunk_size = self._threshold_bytes  # a multiple of 256 KiB, as resumable uploads need
                blob.upload_from_file(
                    body.file, size=body.size, content_type=content_type, checksum="crc32c", retry=self._retry
                )
        # The upload's response is the object's resource: the blob now holds what the server stored.
        return self._info(key, blob)

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises `ObjectNotFoundError` when there are none."""
        blob = self._blob(key)
        with self._errors(key):
            return bytes(blob.download_as_bytes(checksum="crc32c", retry=self._retry))

    def get_into(self, key: str, file: BinaryIO) -> int:
        """Write the bytes of `key` into `file` (checked against its CRC32C); returns how many."""
        blob = self._blob(key)
        before = file.tell() if file.seekable() else 0
        with self._errors(key):
            blob.download_to_file(file, checksum="crc32c", retry=self._retry)
        return (file.tell() - before) if file.seekable() else int(blob.size or 0)

    def head(self, key: str) -> ObjectInfo:
        """Size, type, disposition and metadata of `key`; raises `ObjectNotFoundError` when absent."""
        blob = self._blob(key)
        with self._errors(key):
            blob.reload(retry=self._retry)
        return self._info(key, blob)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order (as the service lists them)."""
        if prefix:
            validate_key(prefix.rstrip("/") or "-")
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(prefix or "/"):
            for blob in self._client.list_blobs(self._bucket, prefix=full_prefix or None, retry=self._retry):
                yield self._info(blob.name[strip:], blob)

    def delete(self, key: str) -> None:
        """Remove `key`; deleting an absent key is not an error."""
        from google.api_core.exceptions import NotFound

        blob = self._blob(key)
        with self._errors(key):
            try:
                blob.delete(retry=self._retry)
            except NotFound as exc:
                if _is_bucket_missing(exc):
                    raise

    def presign_get(self, key: str, *, expires_in: timedelta = DEFAULT_EXPIRY) -> str:
        """A V4 signed URL that lets anyone holding it GET `key` until it expires (at most 7 days)."""
        blob = self._blob(key)
        expires_in_s = check_expiry(expires_in, MAX_EXPIRY)
        signing = self._signing(key)
        with self._errors(key):
            return str(
                blob.generate_signed_url(
                    version="v4",
                    expiration=timedelta(seconds=expires_in_s),
                    method="GET",
                    api_access_endpoint=self._endpoint,
                    **signing,
                )
            )

    def presign_upload(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: timedelta = DEFAULT_UPLOAD_EXPIRY
    ) -> PresignedUpload:
        """A V4 signed PUT for `key` that binds its type and size range (see `storage.uploads.gcs`)."""
        blob = self._blob(key)
        expires_in_s = check_expiry(expires_in, MAX_EXPIRY)
        signing = self._signing(key)
        with self._errors(key):
            return signed_put(
                blob,
                content_type=content_type,
                max_bytes=max_bytes,
                expires_in_s=expires_in_s,
                endpoint=self._endpoint,
                signing=signing,
            )

    def _signing(self, key: str) -> dict[str, Any]:
        if self._signer is not None:
            return {"credentials": self._signer}
        return self._iam_signing(key)

    def _iam_signing(self, key: str) -> dict[str, Any]:
        # Token-only credentials (GCE, Cloud Run, workload identity) cannot sign: IAM signBlob signs for the
        # service account they belong to, authorised by a current access token.
        credentials = self._client._credentials
        email = getattr(credentials, "service_account_email", None)
        if not email or email == "default":
            with self._signing_lock, self._errors(key):
                import google.auth.transport.requests

                credentials.refresh(google.auth.transport.requests.Request())
            email = getattr(credentials, "service_account_email", None)
        if not email or not hasattr(credentials, "token"):
            raise StorageConfigError(
                f"{self.url} cannot presign: its credentials neither hold a key nor name a service account"
            )
        with self._signing_lock, self._errors(key):
            if not credentials.valid:
                import google.auth.transport.requests

                credentials.refresh(google.auth.transport.requests.Request())
            return {"service_account_email": email, "access_token": credentials.token}

    def _blob(self, key: str) -> Blob:
        validate_key(key)
        return self._bucket.blob(f"{self.prefix}/{key}" if self.prefix else key)

    @staticmethod
    def _info(key: str, blob: Blob) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=int(blob.size or 0),
            content_type=blob.content_type,
            etag=blob.etag,
            last_modified=blob.updated,
            metadata=dict(blob.metadata or {}),
            content_disposition=blob.content_disposition,
        )

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from google.api_core.exceptions import Forbidden, GoogleAPIError, NotFound, Unauthorized
        from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError, TransportError
        from google.resumable_media import DataCorruption, InvalidResponse

        try:
            yield
        except NotFound as exc:
            if _is_bucket_missing(exc):
                raise StorageConfigError(f"the bucket of {self.url} does not exist") from exc
            raise ObjectNotFoundError(f"no object {key!r} in {self.url}") from exc
        except (Forbidden, Unauthorized) as exc:
            raise StoragePermissionError(f"access to {key!r} in {self.url} denied ({_message(exc)})") from exc
        except DefaultCredentialsError as exc:
            raise StorageConfigError(f"no usable Google credentials for {self.url}: {exc}") from exc
        # GoogleAPIError covers RetryError: the retry deadline passed while the service kept failing.
        except (GoogleAPIError, TransportError, GoogleAuthError, DataCorruption, InvalidResponse) as exc:
            raise StorageError(f"GCS request for {key!r} in {self.url} failed: {exc}") from exc
        except OSError as exc:  # requests' connection errors, after the retries
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"GCS request for {key!r} in {self.url} failed: {exc}") from exc


def _check_crc32c(blob: Blob, data: bytes, url: str, key: str) -> None:
    # Cloud Storage itself refuses a body that does not match the CRC32C sent along; checking the stored
    # object's CRC32C too covers GCS-compatible servers that do not.
    import google_crc32c

    expected = base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")  # type: ignore[no-untyped-call]
    if blob.crc32c is not None and blob.crc32c != expected:
        raise StorageError(
            f"{key!r} in {url} was corrupted in transit (CRC32C {blob.crc32c}, expected {expected}); put it again"
        )


def _message(exc: GoogleAPICallError) -> str:
    return str(getattr(exc, "message", "") or exc)


def _is_bucket_missing(exc: GoogleAPICallError) -> bool:
    # Both answer 404; only the message tells a missing bucket from a missing object.
    return "bucket" in _message(exc).lower() and "object" not in _message(exc).lower()


def _make_client(
    endpoint_url: str | None,
    service_account_info: Mapping[str, Any] | None,
    credentials: Credentials | None,
    project: str | None,
    anonymous: bool,
) -> tuple[Client, Credentials | None]:
    """The client for requests, and the credentials that can sign locally (None: sign through IAM)."""
    try:
        from google.auth.credentials import AnonymousCredentials, Signing
        from google.cloud import storage
        from google.oauth2 import service_account
    except ImportError as exc:
        raise StorageConfigError(_INSTALL_HINT) from exc
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    from requests.adapters import HTTPAdapter

    signer: Credentials | None = None
    if service_account_info is not None:
        try:
            signer = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                dict(service_account_info), scopes=_SCOPES
            )
        except (ValueError, KeyError) as exc:
            raise StorageConfigError(f"the GCS service-account key is unusable: {exc}") from exc
        credentials = signer
        project = project or service_account_info.get("project_id")
    if anonymous:
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        project = project or "anonymous"
    elif credentials is None:
        try:
            credentials, found_project = google.auth.default(scopes=_SCOPES)
        except DefaultCredentialsError as exc:
            raise StorageConfigError(f"no usable Google credentials: {exc}") from exc
        project = project or found_project
    if signer is None and isinstance(credentials, Signing) and not anonymous:
        signer = credentials  # e.g. a key file found by google.auth.default
    client_options = {"api_endpoint": endpoint_url} if endpoint_url else None
    client = storage.Client(project=project, credentials=credentials, client_options=client_options)
    # Room for parallel puts and downloads: requests' default pool of 10 would drop and reopen connections.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
    for scheme in ("https://", "http://"):
        client._http.mount(scheme, adapter)
    return client, signer
