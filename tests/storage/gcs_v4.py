"""An independent check of GCS V4 signed URLs, since fake-gcs-server accepts any signature.

It rebuilds the canonical request and string-to-sign from Google's published algorithm (not from the SDK's
code) and verifies the RSA signature with the service account's public key, as Cloud Storage does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


class SignedUrlRejected(Exception):
    """What Cloud Storage answers with 403: a bad signature, or an expired URL."""


def verify_v4_signed_url(
    url: str,
    public_key: RSAPublicKey,
    *,
    now: datetime,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> None:
    """Return if `url` is a valid, unexpired V4 URL for `method`, signed with the matching private key, and sent with
    `headers` (those it signs besides host must be among them, unchanged); raise otherwise."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    values = dict(query)
    sent = {"host": parts.netloc, **{name.lower(): value.strip() for name, value in (headers or {}).items()}}
    signed = values.get("X-Goog-SignedHeaders", "").split(";")
    if values.get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256" or "host" not in signed:
        raise SignedUrlRejected("not a V4 RSA URL that signs the host header")
    if method == "GET" and signed != ["host"]:
        raise SignedUrlRejected("a GET URL should sign the host header alone")
    if any(name not in sent for name in signed):
        raise SignedUrlRejected(f"a signed header is missing from the request (signed: {signed})")
    signature = bytes.fromhex(values["X-Goog-Signature"])
    signed_at = datetime.strptime(values["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    if now >= signed_at + timedelta(seconds=int(values["X-Goog-Expires"])):
        raise SignedUrlRejected("expired")
    canonical_query = "&".join(
        f"{_encode(name)}={_encode(value)}" for name, value in sorted(query) if name != "X-Goog-Signature"
    )
    canonical_headers = "".join(f"{name}:{sent[name]}\n" for name in signed)
    canonical_request = "\n".join(
        [method, parts.path, canonical_query, canonical_headers, ";".join(signed), "UNSIGNED-PAYLOAD"]
    )
    scope = values["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(
        ["GOOG4-RSA-SHA256", values["X-Goog-Date"], scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    try:
        public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignedUrlRejected("signature does not match") from None


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")
