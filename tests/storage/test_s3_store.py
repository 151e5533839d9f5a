"""What only the S3 backend does: prefixes, SigV4 presigning, integrity headers, SDK errors translated."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3.session
import pytest
from botocore.exceptions import ClientError

from storage import (
    ObjectNotFoundError,
    S3Store,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from storage.s3 import _translate

pytestmark = pytest.mark.s3


def test_keys_live_under_the_prefix(s3_store: S3Store, aws_session: boto3.session.Session) -> None:
    s3_store.put("a.txt", b"a", content_type="text/plain")

    raw = aws_session.client("s3", endpoint_url=s3_store._client.meta.endpoint_url)
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
