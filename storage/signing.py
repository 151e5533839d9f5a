"""HMAC-signed, expiring links for backends that cannot presign by themselves (the local one): GET links to read
an object, and PUT links to write one (an upload), both served by the API's file route."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import timedelta
from urllib.parse import quote, urlencode

from storage.base import MAX_EXPIRY
from storage.errors import InvalidKeyError, InvalidSignatureError, StorageConfigError
from storage.expiry import check_expiry
from storage.object_keys import validate_key

#: Shortest secret accepted, in bytes: HMAC-SHA256 gains nothing past 32 and is guessable well below 16.
MIN_SECRET_BYTES = 16
#: The path under `base_url` that serves signed links; the API mounts `GET /v1/files/{key:path}` there.
FILES_PATH = "/v1/files/"


class LinkSigner:
    """Mint and check links of the form `{base_url}/v1/files/{key}?expires=<unix s>&signature=<mac>`.

    The MAC is HMAC-SHA256 over the method, the key and the expiry, so a link grants GET on exactly one key
    until `expires`. Keep `secret` out of logs; every API replica that serves links needs the same one.
    """

    def __init__(self, secret: bytes, base_url: str) -> None:
        """`secret`: at least `MIN_SECRET_BYTES` random bytes. `base_url`: e.g. "https://api.example.com"."""
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise StorageConfigError(f"link-signing secret must be at least {MIN_SECRET_BYTES} bytes")
        if not base_url.startswith(("http://", "https://")):
            raise StorageConfigError(f"base_url must be an http(s) URL; got {base_url!r}")
        self._secret = secret
        self.base_url = base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"LinkSigner(base_url={self.base_url!r})"

    def sign(self, key: str, *, expires_in: timedelta, now: float | None = None) -> str:
        """A link to GET `key` that expires `expires_in` after `now` (default: the current Unix time, in s).

        Raises `InvalidKeyError` for a bad key and `InvalidExpiryError` unless 1 s ≤ `expires_in` ≤ `MAX_EXPIRY`.
        """
        validate_key(key)
        lifetime_s = check_expiry(expires_in, MAX_EXPIRY)
        expires = int(time.time() if now is None else now) + lifetime_s
        query = urlencode({"expires": expires, "signature": self._mac(key, str(expires))})
        return f"{self.base_url}{FILES_PATH}{quote(key, safe='/')}?{query}"

    def verify(self, key: str, expires: str, signature: str, *, now: float | None = None) -> None:
        """Return if the link for `key` is authentic and unexpired at `now`; raise `InvalidSignatureError` if not.

        `key` is the decoded path after `/v1/files/`; `expires` and `signature` are the raw query values.
        The message says "expired" or "invalid"; map either to HTTP 403.
        """
        self._verify(key, expires, signature, now=now, method="GET", terms="")

    def sign_upload(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: timedelta, now: float | None = None
    ) -> str:
        """A link to PUT at most `max_bytes` of `content_type` (sent as the Content-Type header) to `key`.

        Raises as `sign` does, and `ValueError` for a `max_bytes` below 1 or a content type with odd characters.
        """
        validate_key(key)
        _check_upload_terms(content_type, max_bytes)
        lifetime_s = check_expiry(expires_in, MAX_EXPIRY)
        expires = int(time.time() if now is None else now) + lifetime_s
        mac = self._mac(key, str(expires), method="PUT", terms=f"{max_bytes}\n{content_type}")
        query = urlencode({"expires": expires, "max_bytes": max_bytes, "signature": mac})
        return f"{self.base_url}{FILES_PATH}{quote(key, safe='/')}?{query}"

    def verify_upload(
        self, key: str, expires: str, max_bytes: str, content_type: str, signature: str, *, now: float | None = None
    ) -> int:
        """The byte limit of an authentic, unexpired upload link; raises `InvalidSignatureError` (HTTP 403) if not.

        `content_type` is the request's Content-Type header: another type than the signed one does not verify.
        """
        if not (max_bytes.isascii() and max_bytes.isdigit()) or not content_type.isprintable():
            raise InvalidSignatureError("signed link is invalid")
        self._verify(key, expires, signature, now=now, method="PUT", terms=f"{max_bytes}\n{content_type}")
        return int(max_bytes)

    def _verify(self, key: str, expires: str, signature: str, *, now: float | None, method: str, terms: str) -> None:
        try:
            validate_key(key)
        except InvalidKeyError:
            raise InvalidSignatureError("signed link is invalid") from None
        if not (expires.isascii() and expires.isdigit()):
            raise InvalidSignatureError("signed link is invalid")
        expected = self._mac(key, expires, method=method, terms=terms)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace")):
            raise InvalidSignatureError("signed link is invalid")
        if int(time.time() if now is None else now) >= int(expires):
            raise InvalidSignatureError("signed link has expired")

    def _mac(self, key: str, expires: str, *, method: str = "GET", terms: str = "") -> str:
        # Valid keys hold no control characters and expiries only digits, so the fields cannot run together; a GET
        # link signs exactly what it always did, so links minted before uploads existed stay valid.
        message = f"{method}\n{key}\n{expires}" + (f"\n{terms}" if terms else "")
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _check_upload_terms(content_type: str, max_bytes: int) -> None:
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1; got {max_bytes}")
    if not content_type or not content_type.isascii() or not content_type.isprintable() or "\n" in content_type:
        raise ValueError(f"content_type must be printable ASCII; got {content_type!r}")
