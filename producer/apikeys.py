"""API keys: who may call the API, which tenant their jobs belong to, and their limits.

A key is shown once, at creation: `sdq_<id>_<secret>`. Redis keeps only the id and a SHA-256 digest of the whole
token (the secret carries 256 random bits, so a plain digest is as strong as a slow hash and costs microseconds
per request). Each key also carries what the webhook sender needs: a default webhook endpoint and a `whsec_…`
secret, used to sign the events sent for the key's jobs and to verify jobs its systems push to `/v1/hooks/jobs`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime, timezone

import redis
from pydantic import BaseModel, ConfigDict, Field

from . import keys

TOKEN_PREFIX = "sdq_"
# fullmatch, never `$`: that would accept a trailing newline.
_TOKEN = re.compile(r"sdq_([0-9a-f]{16})_([A-Za-z0-9_\-]{32,128})")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


class ApiKey(BaseModel):
    """One API key's record (never its token). Limits left `None` fall back to the server's defaults."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    name: str = ""
    created_at: datetime
    revoked: bool = False
    rate_per_s: float | None = Field(default=None, description="Sustained requests per second.")
    burst: int | None = Field(default=None, description="Requests allowed at once above the sustained rate.")
    max_queued_jobs: int | None = Field(default=None, description="Jobs of this key that may wait in the queue.")
    webhook_url: str | None = Field(default=None, description="Default webhook endpoint for this key's jobs.")
    webhook_secret: str = Field(repr=False, description="`whsec_…`: signs outbound events, verifies inbound ones.")


def valid_tenant(tenant: str) -> bool:
    """Whether `tenant` is a usable tenant name (it becomes part of Redis keys)."""
    return bool(_TENANT.fullmatch(tenant))


def token_digest(token: str) -> str:
    """What is stored of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_key_id(token: str) -> str | None:
    """The key id inside a well-formed token, else None."""
    match = _TOKEN.fullmatch(token)
    return match.group(1) if match else None


def _new_webhook_secret() -> str:
    # The Standard Webhooks secret format: whsec_ + base64 of the raw HMAC key.
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class KeyStore:
    """Creates, reads, authenticates and revokes API keys in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def create(
        self,
        tenant: str,
        *,
        name: str = "",
        rate_per_s: float | None = None,
        burst: int | None = None,
        max_queued_jobs: int | None = None,
        webhook_url: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key for `tenant`; returns its record and its token (shown this once, never stored)."""
        if not valid_tenant(tenant):
            raise ValueError("tenant must be 1–64 letters, digits, '_', '.' or '-', starting with a letter or digit")
        key_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        fields: dict[str, str] = {
            "id": key_id,
            "tenant": tenant,
            "name": name,
            "digest": token_digest(token),
            "created_at": repr(time.time()),
            "revoked": "0",
            "webhook_secret": _new_webhook_secret(),
        }
        optional = {
            "rate_per_s": rate_per_s,
            "burst": burst,
            "max_queued_jobs": max_queued_jobs,
            "webhook_url": webhook_url,
        }
        fields.update({k: str(v) for k, v in optional.items() if v is not None})
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys.api_key(key_id), mapping=fields)  # type: ignore[arg-type]
        pipe.sadd(keys.API_KEYS, key_id)
        pipe.execute()
        return key_from_fields(fields), token

    def get(self, key_id: str) -> ApiKey | None:
        """The key's record, or None."""
        fields = self._fields(key_id)
        return key_from_fields(fields) if fields else None

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key `token` belongs to, or None (unknown, malformed, wrong secret or revoked)."""
        match = _TOKEN.fullmatch(token)
        if not match:
            return None
        fields = self._fields(match.group(1))
        if not fields or fields.get("revoked") == "1":
            return None
        if not hmac.compare_digest(fields.get("digest", ""), token_digest(token)):
            return None
        return key_from_fields(fields)

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        ids = sorted(_text(i) for i in self.client.smembers(keys.API_KEYS))
        pipe = self.client.pipeline(transaction=False)
        for key_id in ids:
            pipe.hgetall(keys.api_key(key_id))
        found = [key_from_fields(_decode(f)) for f in pipe.execute() if f]
        return sorted(found, key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> bool:
        """Revoke a key at once (its jobs keep running); False if there is no such key."""
        if not self.client.exists(keys.api_key(key_id)):
            return False
        self.client.hset(keys.api_key(key_id), "revoked", "1")
        return True

    def _fields(self, key_id: str) -> dict[str, str]:
        return _decode(self.client.hgetall(keys.api_key(key_id)))  # type: ignore[arg-type]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}


def key_from_fields(f: Mapping[str, str]) -> ApiKey:
    """An `ApiKey` from its Redis hash fields."""
    return ApiKey(
        id=f["id"],
        tenant=f["tenant"],
        name=f.get("name", ""),
        created_at=datetime.fromtimestamp(float(f["created_at"]), tz=timezone.utc),
        revoked=f.get("revoked") == "1",
        rate_per_s=float(f["rate_per_s"]) if f.get("rate_per_s") else None,
        burst=int(f["burst"]) if f.get("burst") else None,
        max_queued_jobs=int(f["max_queued_jobs"]) if f.get("max_queued_jobs") else None,
        webhook_url=f.get("webhook_url") or None,
        webhook_secret=f["webhook_secret"],
    )
