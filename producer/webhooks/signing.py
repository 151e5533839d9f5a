"""Standard Webhooks signatures (standardwebhooks.com): what a sender adds and what a receiver checks.

A message is signed as `HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")`, sent base64-encoded in
`webhook-signature: v1,<sig>`. During a key rotation the sender signs with every live secret, space-separated, so
a receiver holding either the old or the new secret accepts the message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
#: Receivers reject messages whose timestamp is further than this from their clock (replay protection).
TOLERANCE_S = 5 * 60
_MIN_KEY_BYTES = 16


class SignatureError(ValueError):
    """A message failed verification; the message says which check failed (never which secret was close)."""


def new_secret() -> str:
    """A fresh `whsec_…` secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret; raises `ValueError` for a malformed or short one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :] + "==", validate=False)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"a webhook secret holds at least {_MIN_KEY_BYTES} bytes")
    return key


def sign(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """One `v1,<base64>` signature of `body`."""
    digest = hmac.new(secret_key(secret), f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secrets_: Sequence[str], msg_id: str, body: bytes, *, now_s: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret in `secrets_` (rotation: old and new)."""
    if not secrets_:
        raise ValueError("at least one signing secret is needed")
    timestamp = int(time.time() if now_s is None else now_s)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_),
    }


def verify(
    secrets_: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = TOLERANCE_S,
    now_s: float | None = None,
) -> str:
    """Check a received message against any of `secrets_`; returns its `webhook-id` or raises `SignatureError`."""
    lower = {name.lower(): value for name, value in headers.items()}
    msg_id, stamp, signatures = (lower.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError("webhook-timestamp must be whole seconds since the epoch")
    now = time.time() if now_s is None else now_s
    if abs(now - int(stamp)) > tolerance_s:
        raise SignatureError(f"webhook-timestamp is more than {tolerance_s:g} s away from the server's clock")
    expected = [sign(secret, msg_id, int(stamp), body).encode() for secret in secrets_]
    for candidate in signatures.split():
        if not candidate.startswith("v1,"):
            continue  # other schemes (v1a: asymmetric) are not used here
        if any(hmac.compare_digest(candidate.encode(), wanted) for wanted in expected):
            return msg_id
    raise SignatureError("no webhook-signature matches")
