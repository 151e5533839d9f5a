"""A store in an S3 (or S3-compatible) bucket, over boto3, which is imported only when a store is built."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlencode

from storage.base import DEFAULT_EXPIRY, MAX_EXPIRY, ObjectInfo
from storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from storage.expiry import check_expiry
from storage.keys import validate_key
from storage.metadata import validate_metadata

if TYPE_CHECKING:
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

    Credentials, and settings not passed here, come from boto3's own chain (environment, profile, instance role).
    Integrity: every put sends Content-MD5, which S3 checks before storing.
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
        max_attempts: int = 5,
    ) -> None:
        """Pass `client` to use a ready boto3 S3 client, or `session`/`endpoint_url`/`region`/... to build one.

        `max_attempts` counts every try of a request, the first included (botocore's `total_max_attempts`).
        """
        if not _BUCKET.fullmatch(bucket):
            raise StorageConfigError(f"S3 bucket names are 3-63 of [a-z0-9.-]; got {bucket!r}")
        prefix = prefix.strip("/")
        try:
            validate_key(prefix or "-")
        except InvalidKeyError as exc:
            raise StorageConfigError(f"bad S3 prefix {prefix!r}: {exc}") from None
        if client is not None and (session, endpoint_url, region) != (None, None, None):
            raise StorageConfigError("pass either client= or session=/endpoint_url=/region=, not both")
        self.bucket = bucket
        self.prefix = prefix
        style = None if addressing_style == "auto" else addressing_style
        options = {"endpoint_url": endpoint_url, "region": region, "addressing_style": style}
        query = urlencode({name: value for name, value in options.items() if value})
        self.url = f"s3://{bucket}/{quote(prefix, safe='/')}".rstrip("/") + (f"?{query}" if query else "")
        if client is None:
            client = _make_client(session, endpoint_url, region, addressing_style, max_attempts)
        self._client = client

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        content_disposition: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `data` under `key`, replacing any object there; returns what was stored (no `last_modified`)."""
        full_key = self._full_key(key)
        checked = validate_metadata(metadata)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
        request: PutObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": full_key,
            "Body": data,
            "ContentType": content_type,
            "ContentMD5": md5,
            "Metadata": checked,
        }
        if content_disposition:
            request["ContentDisposition"] = content_disposition
        with self._errors(key):
            response = self._client.put_object(**request)
        return ObjectInfo(
            key=key,
            size=len(data),
            content_type=content_type,
            etag=response.get("ETag", "").strip('"') or None,
            metadata=checked,
            content_disposition=content_disposition,
        )

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises `ObjectNotFoundError` when there are none."""
        full_key = self._full_key(key)
        with self._errors(key):
            body = self._client.get_object(Bucket=self.bucket, Key=full_key)["Body"]
            try:
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

    def delete(self, key: str) -> None:
        """Remove `key`; deleting an absent key is not an error (S3 answers 204 either way)."""
        full_key = self._full_key(key)
        with self._errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=full_key)

    def presign_get(self, key: str, *, expires_in: timedelta = DEFAULT_EXPIRY) -> str:
        """A SigV4 URL that lets anyone holding it GET `key` until it expires (at most `MAX_EXPIRY`)."""
        full_key = self._full_key(key)
        expires_in_s = check_expiry(expires_in, MAX_EXPIRY)
        with self._errors(key):
            return self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full_key}, ExpiresIn=expires_in_s
            )

    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        try:
            yield
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
        s3={"addressing_style": addressing_style},
    )
    try:
        return (session or boto3.session.Session()).client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
    except (BotoCoreError, ValueError) as exc:  # e.g. an unknown AWS_PROFILE, a malformed endpoint_url
        raise StorageConfigError(f"cannot build an S3 client: {exc}") from exc
