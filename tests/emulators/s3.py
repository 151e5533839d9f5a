"""What an S3 emulator (SeaweedFS or moto) hands a test: its endpoint and the credentials it accepts."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """An S3 endpoint and the credentials it accepts."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = REGION

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that make boto3's chain pick these credentials (for subprocesses)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> object:
        """A boto3 S3 client with these credentials (path-style, SigV4)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def create_bucket(self, bucket: str) -> None:
        """Create `bucket` unless it exists."""
        client = self.client()
        try:
            with suppress(client.exceptions.BucketAlreadyOwnedByYou):  # type: ignore[attr-defined]
                client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        finally:
            client.close()  # type: ignore[attr-defined]

    def url(self, bucket: str, prefix: str = "") -> str:
        """The `s3://` storage URL of `bucket/prefix` on this server."""
        query = urlencode({"endpoint_url": self.endpoint_url, "region": self.region, "addressing_style": "path"})
        return f"s3://{bucket}/{quote(prefix.strip('/'), safe='/')}".rstrip("/") + f"?{query}"
