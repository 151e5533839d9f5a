"""A store in an S3 (or S3-compatible) bucket, over boto3, which is imported only when a store is built."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, cast
from urllib.parse import quote, urlencode

from storage.base import DEFAULT_EXPIRY, MAX_EXPIRY, MULTIPART_THRESHOLD_BYTES, ObjectInfo, PutData
from storage.body import open_body
from storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from storage.expiry import check_expiry
from storage.metadata import validate_metadata
from storage.object_keys import validate_key
from storage.uploads.base import DEFAULT_UPLOAD_EXPIRY, PresignedUpload
from storage.uploads.s3 import presign_post

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from boto3.session import Session
    from botocore.exceptions import ClientError
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef

AddressingStyle = Literal["auto", "path", "virtual"]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_DENIED = {"AccessDenied", "Forbidden", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


class S3Store:
    """Objects under `s3://bucket/prefix/`; presigns SigV4 GET URLs; retries in botocore's standard mode.

    Credentials come from `access_key_id`/`secret_access_key` when given, else from boto3's own chain
    (environment, profile, instance role). Integrity: a small put sends Content-MD5, which S3 checks before
    storing; larger ones go up in parallel multipart parts, each with the checksum botocore adds (CRC32).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: S3Client | None = None,
        session: Session | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: AddressingStyle = "auto",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        max_attempts: int = 5,
        multipart_threshold_bytes: int = MULTIPART_THRESHOLD_BYTES,
        max_concurrency: int = 8,
    ) -> None:
        """Pass `client` to use a ready boto3 S3 client, or `session`/`endpoint_url`/`region`/keys to build one.

        `max_attempts` counts every try of a request, the first included (botocore's `total_max_attempts`).
        Objects above `multipart_threshold_bytes` (at least S3's 5 MiB part minimum) go up in that many-byte
        parts, `max_concurrency` at a time; large downloads use ranged GETs the same way.
        """
        if not _BUCKET.fullmatch(bucket):
            raise StorageConfigError(f"S3 bucket names are 3-63 of [a-z0-9.-]; got {bucket!r}")
        prefix = prefix.strip("/")
        try:
            validate_key(prefix or "-")
        except InvalidKeyError as exc:
            raise StorageConfigError(f"bad S3 prefix {prefix!r}: {exc}") from None
        if client is not None and (session, endpoint_url, region, access_key_id) != (None, None, None, None):
            raise StorageConfigError("pass either client= or session=/endpoint_url=/region=/keys, not both")
        if session is not None and access_key_id is not None:
            raise StorageConfigError("pass either session= or access keys, not both")
        if (access_key_id is None) != (secret_access_key is None):
            raise StorageConfigError("pass both access_key_id and secret_access_key, or neither")
        if multipart_threshold_bytes < 5 * 1024 * 1024:
            raise StorageConfigError("multipart_threshold_bytes must be at least 5 MiB (S3's smallest part)")
        self.bucket = bucket
        self.prefix = prefix
        style = None if addressing_style == "auto" else addressing_style
        options = {"endpoint_url": endpoint_url, "region": region, "addressing_style": style}
        query = urlencode({name: value for name, value in options.items() if value})
        self.url = f"s3://{bucket}/{quote(prefix, safe='/')}".rstrip("/") + (f"?{query}" if query else "")
        self._threshold_bytes = multipart_threshold_bytes
        self._max_concurrency = max_concurrency
        self._session = session
        if client is None:
            if access_key_id is not None:
                session = _make_session(access_key_id, secret_access_key, session_token)
            self._session = session
            client = _make_client(session, endpoint_url, region, addressing_style, max_attempts)
        self._client = client
        self._transfer_config: TransferConfig | None = None

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

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
        """Store `data` under `key`, replacing any object there; returns what was stored.

        Small bytes go up in one PUT with Content-MD5 (the returned info has no `last_modified`); files and
        larger bytes go through boto3's transfer manager, in multipart parts above the threshold (the info is
        then read back with `head`).
        """
        full_key = self._full_key(key)
        checked = validate_metadata(metadata)
        with open_body(data, threshold_bytes=self._threshold_bytes) as body:
            if body.data is None:
                assert body.file is not None
                self._upload_parts(key, full_key, body.file, content_type, content_disposition, checked)
                return self.head(key)
            request: PutObjectRequestTypeDef = {
                "Bucket": self.bucket,
                "Key": full_key,
                "Body": body.data,
                "ContentType": content_type,
                "ContentMD5": body.md5_b64 or "",
                "Metadata": checked,
            }
            if content_disposition:
                request["ContentDisposition"] = content_disposition
            with self._errors(key):
                response = self._client.put_object(**request)
        return ObjectInfo(
            key=key,
            size=len(body.data),
            content_type=content_type,
            etag=response.get("ETag", "").strip('"') or None,
            metadata=checked,
            content_disposition=content_disposition,
        )

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises `ObjectNotFoundError` when there are none."""
        return self._read(key, None)

    def get_at_most(self, key: str, max_bytes: int) -> bytes:
        """`storage.base.BoundedReader`: one GET, whose Content-Length is checked before the body is read."""
        return self._read(key, max_bytes)

    def _read(self, key: str, max_bytes: int | None) -> bytes:
        full_key = self._full_key(key)
        with self._errors(key):
            answer = self._client.get_object(Bucket=self.bucket, Key=full_key)
            body = answer["Body"]
            try:
                size = int(answer["ContentLength"])
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLargeError(key, size, max_bytes)
                return body.read()
            finally:
                body.close()

    def head(self, key: str) -> ObjectInfo:
        """Size, type, disposition and metadata of `key`; raises `ObjectNotFoundError` when absent."""
        full_key = self._full_key(key)
        with self._errors(key):
            response = self._client.head_object(Bucket=self.bucket, Key=full_key)
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            content_type=response.get("ContentType"),
            etag=response.get("ETag", "").strip('"') or None,
            last_modified=response.get("LastModified"),
            metadata=response.get("Metadata", {}),
            content_disposition=response.get("ContentDisposition"),
        )

    def get_into(self, key: str, file: BinaryIO) -> int:
        """Write the bytes of `key` into `file`, in parallel ranged GETs when large; returns how many."""
        full_key = self._full_key(key)
        written = _CountingWriter(file)
        with self._errors(key):
            self._client.download_fileobj(self.bucket, full_key, cast("BinaryIO", written), Config=self._transfer())
        return written.count

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order (S3 lists in UTF-8 byte order)."""
        full_prefix = self._full_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors(prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"][strip:],
                        size=item["Size"],
                        etag=item.get("ETag", "").strip('"') or None,
                        last_modified=item.get("LastModified"),
                    )

    def delete(self, key: str) -> None:
        """Remove `key`; deleting an absent key is not an error (S3 answers 204 either way)."""
        full_key = self._full_key(key)
        with self._errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=full_key)

    def presign_get(self, key: str, *, expires_in: timedelta = DEFAULT_EXPIRY) -> str:
        """A SigV4 URL that lets anyone holding it GET `key` until it expires.

        At most `MAX_EXPIRY`, and with temporary credentials (STS, a role) at most until they expire, since the
        URL dies with them.
        """
        full_key = self._full_key(key)
        expires_in_s = check_expiry(expires_in, self._longest_expiry())
        with self._errors(key):
            return self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full_key}, ExpiresIn=expires_in_s
            )

    def presign_upload(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: timedelta = DEFAULT_UPLOAD_EXPIRY
    ) -> PresignedUpload:
        """A SigV4 POST policy that writes `key` once (see `storage.uploads.s3`); S3 enforces every condition."""
        full_key = self._full_key(key)
        expires_in_s = check_expiry(expires_in, self._longest_expiry())
        with self._errors(key):
            return presign_post(
                self._client,
                self.bucket,
                full_key,
                content_type=content_type,
                max_bytes=max_bytes,
                expires_in_s=expires_in_s,
            )

    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _full_prefix(self, prefix: str) -> str:
        if prefix:
            validate_key(prefix.rstrip("/") or "-")
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def _longest_expiry(self) -> timedelta:
        credentials = self._session.get_credentials() if self._session is not None else None
        # botocore keeps the expiry of refreshable (temporary) credentials only in this attribute.
        expiry = getattr(credentials, "_expiry_time", None)
        if not isinstance(expiry, datetime):
            return MAX_EXPIRY
        left = expiry - datetime.now(timezone.utc)
        return max(min(MAX_EXPIRY, left), timedelta(0))

    def _transfer(self) -> TransferConfig:
        if self._transfer_config is None:
            from boto3.s3.transfer import TransferConfig

            self._transfer_config = TransferConfig(
                multipart_threshold=self._threshold_bytes,
                multipart_chunksize=self._threshold_bytes,
                max_concurrency=self._max_concurrency,
                use_threads=self._max_concurrency > 1,
            )
        return self._transfer_config

    def _upload_parts(
        self,
        key: str,
        full_key: str,
        file: BinaryIO,
        content_type: str,
        content_disposition: str | None,
        metadata: dict[str, str],
    ) -> None:
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": metadata}
        if content_disposition:
            extra["ContentDisposition"] = content_disposition
        with self._errors(key):
            # upload_fileobj aborts the multipart upload on failure, so no orphaned parts stay billed.
            self._client.upload_fileobj(file, self.bucket, full_key, ExtraArgs=extra, Config=self._transfer())

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        try:
            yield
        except S3UploadFailedError as exc:
            cause = exc.__context__
            if isinstance(cause, ClientError):
                raise _translate(cause, self.url, key) from exc
            raise StorageError(f"S3 upload of {key!r} to {self.url} failed: {exc}") from exc
        except ClientError as exc:
            raise _translate(exc, self.url, key) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageConfigError(f"no usable AWS credentials for {self.url}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 request for {key!r} in {self.url} failed: {exc}") from exc


def _translate(exc: ClientError, url: str, key: str) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    detail = f"{code or status}: {error.get('Message', '')}".rstrip(": ")
    if code == "NoSuchBucket":
        return StorageConfigError(f"the bucket of {url} does not exist ({detail})")
    if code in _NOT_FOUND or status == 404:
        return ObjectNotFoundError(f"no object {key!r} in {url}")
    if code in _DENIED or status == 403:
        return StoragePermissionError(f"access to {key!r} in {url} denied ({detail})")
    return StorageError(f"S3 request for {key!r} in {url} failed ({detail})")


class _CountingWriter:
    """Counts what boto3's downloader writes (it seeks and writes parts out of order, hence the high mark)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._base = file.tell() if file.seekable() else 0
        self.count = 0

    def write(self, data: bytes) -> int:
        written = self._file.write(data)
        if self._file.seekable():
            self.count = max(self.count, self._file.tell() - self._base)
        else:
            self.count += written
        return written

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset + (self._base if whence == 0 else 0), whence) - self._base

    def tell(self) -> int:
        return self._file.tell() - self._base

    def seekable(self) -> bool:
        return self._file.seekable()


def _make_session(access_key_id: str | None, secret_access_key: str | None, session_token: str | None) -> Session:
    try:
        import boto3.session
    except ImportError as exc:
        raise StorageConfigError("the s3 backend needs boto3: pip install 'sdqueue[aws]'") from exc
    return boto3.session.Session(
        aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, aws_session_token=session_token
    )


def _make_client(
    session: Session | None,
    endpoint_url: str | None,
    region: str | None,
    addressing_style: AddressingStyle,
    max_attempts: int,
) -> S3Client:
    try:
        import boto3.session
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError as exc:
        raise StorageConfigError("the s3 backend needs boto3: pip install 'sdqueue[aws]'") from exc
    config = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        # Room for parallel puts and multipart parts: the default 10 would drop and reopen connections.
        max_pool_connections=32,
        s3={"addressing_style": addressing_style},
    )
    try:
        return (session or boto3.session.Session()).client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
    except (BotoCoreError, ValueError) as exc:  # e.g. an unknown AWS_PROFILE, a malformed endpoint_url
        raise StorageConfigError(f"cannot build an S3 client: {exc}") from exc
