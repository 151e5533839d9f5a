"""What only the S3 backend does: prefixes, SigV4 presigning, integrity headers, multipart, SDK errors translated."""

from __future__ import annotations

from contextlib import closing
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3.session
import botocore.session
import pytest
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import ClientError

from storage import (
    InvalidExpiryError,
    ObjectNotFoundError,
    S3Store,
    StorageConfigError,
    StorageCredentials,
    StorageError,
    StoragePermissionError,
    open_store,
)
from storage.base import MULTIPART_THRESHOLD_BYTES
from storage.s3 import _translate
from tests.emulators import S3Server

pytestmark = pytest.mark.s3


def test_keys_live_under_the_prefix(s3_store: S3Store, aws_session: boto3.session.Session) -> None:
    s3_store.put("a.txt", b"a", content_type="text/plain")

    with closing(aws_session.client("s3", endpoint_url=s3_store._client.meta.endpoint_url)) as raw:
        assert raw.get_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}/a.txt")["Body"].read() == b"a"


def test_presigned_url_is_sigv4_with_the_asked_lifetime(s3_store: S3Store) -> None:
    url = s3_store.presign_get("a.txt", expires_in=timedelta(minutes=15))

    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["900"]
    assert urlsplit(url).path == f"/{s3_store.bucket}/{s3_store.prefix}/a.txt"


def test_put_sends_content_md5(s3_store: S3Store) -> None:
    sent: dict[str, Any] = {}
    s3_store._client.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.update(request.headers))

    s3_store.put("a.txt", b"a", content_type="text/plain")

    assert sent["Content-MD5"] in (b"DMF1ucDxtqgxw5niaXcmYQ==", "DMF1ucDxtqgxw5niaXcmYQ==")  # MD5 of b"a"


def test_a_missing_bucket_is_a_config_error(moto_endpoint: str, aws_session: boto3.session.Session) -> None:
    store = S3Store("no-such-bucket", session=aws_session, endpoint_url=moto_endpoint, addressing_style="path")

    with closing(store):
        with pytest.raises(StorageConfigError, match="does not exist"):
            store.put("a.txt", b"a", content_type="text/plain")
        with pytest.raises(StorageConfigError, match="does not exist"):
            store.get("a.txt")


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, ObjectNotFoundError),
        ("404", 404, ObjectNotFoundError),
        ("NoSuchBucket", 404, StorageConfigError),
        ("AccessDenied", 403, StoragePermissionError),
        ("403", 403, StoragePermissionError),
        ("SignatureDoesNotMatch", 403, StoragePermissionError),
        ("SlowDown", 503, StorageError),
        ("InternalError", 500, StorageError),
    ],
)
def test_client_errors_become_storage_errors(code: str, status: int, expected: type[StorageError]) -> None:
    error = _translate(_client_error(code, status), "s3://b/p", "k")
    assert type(error) is expected
    assert "s3://b/p" in str(error)


def test_client_and_client_options_are_exclusive(s3_store: S3Store) -> None:
    with pytest.raises(StorageConfigError, match="not both"):
        S3Store("b-1", client=s3_store._client, region="us-east-1")


def test_wrong_keys_are_a_permission_error_on_a_server_that_checks(seaweedfs_server: S3Server) -> None:
    seaweedfs_server.create_bucket("sdqueue-test")
    wrong = StorageCredentials(aws_access_key_id=seaweedfs_server.access_key_id, aws_secret_access_key="wrong")
    store = open_store(seaweedfs_server.url("sdqueue-test", "p"), credentials=wrong)

    for operation in (
        lambda: store.put("a.txt", b"a", content_type="text/plain"),
        lambda: store.get("a.txt"),
        lambda: store.head("a.txt"),
        lambda: list(store.list()),
    ):
        with pytest.raises(StoragePermissionError, match="denied"):
            operation()


def test_large_puts_are_multipart_uploads(seaweedfs_store: S3Store) -> None:
    info = seaweedfs_store.put("big.bin", b"x" * (MULTIPART_THRESHOLD_BYTES + 1), content_type="text/plain")
    assert info.etag is not None and info.etag.endswith("-2")  # S3's etag of a two-part upload


def test_temporary_credentials_cap_the_url_lifetime(moto_endpoint: str) -> None:
    expiry = datetime.now(timezone.utc) + timedelta(hours=1)
    botocore_session = botocore.session.Session()
    botocore_session._credentials = RefreshableCredentials(  # an STS/role session that ends in an hour
        "AKIA", "secret", "token", expiry, lambda: {}, "sts"
    )
    store = S3Store("b-1", session=boto3.session.Session(botocore_session=botocore_session), endpoint_url=moto_endpoint)

    assert "X-Amz-Security-Token=token" in store.presign_get("k", expires_in=timedelta(minutes=30))
    with pytest.raises(InvalidExpiryError, match="at most"):
        store.presign_get("k", expires_in=timedelta(hours=2))


def test_explicit_keys_and_a_session_are_exclusive(aws_session: boto3.session.Session) -> None:
    with pytest.raises(StorageConfigError, match="not both"):
        S3Store("b-1", session=aws_session, access_key_id="a", secret_access_key="b")
    with pytest.raises(StorageConfigError, match="both"):
        S3Store("b-1", access_key_id="a")
    with pytest.raises(StorageConfigError, match="5 MiB"):
        S3Store("b-1", multipart_threshold_bytes=1024)


def test_a_bounded_read_is_one_request_and_a_refused_one_reads_no_body(seaweedfs_store: S3Store) -> None:
    """`get_at_most` (a job's upload, read by the worker): one GET whose Content-Length decides, not a HEAD and then
    a GET; an object over the limit is refused without its body being read."""
    from storage import ObjectTooLargeError, get_at_most

    seaweedfs_store.put("uploads/big", b"x" * 100_000, content_type="image/png")
    sent: list[str] = []
    events = seaweedfs_store._client.meta.events

    def record(request: Any, **_: Any) -> None:
        sent.append(request.method)

    events.register("before-send.s3", record)
    try:
        assert get_at_most(seaweedfs_store, "uploads/big", 100_000) == b"x" * 100_000
        assert sent == ["GET"]
        with pytest.raises(ObjectTooLargeError):
            get_at_most(seaweedfs_store, "uploads/big", 99_999)
        assert sent == ["GET", "GET"]
    finally:
        events.unregister("before-send.s3", record)
