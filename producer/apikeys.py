"""API keys: who may call the API, what its role allows, which tenant its jobs belong to, and its limits.

A key is shown once, at creation: `sdq_<id>_<secret>`. Redis keeps only the id and a SHA-256 digest of the whole
token (the secret carries 256 random bits, so a plain digest is as strong as a slow hash and costs microseconds
per request). Its role says what it may do (`tenant`: its own jobs; `admin`: that plus the fleet-wide views;
`scaling`: only `GET /v1/scaling`, for KEDA). Each key also carries what the webhook sender needs: a default
webhook endpoint and two separate `whsec_…` secrets, one that verifies jobs its systems push to `/v1/hooks/jobs`
(inbound) and one that signs the events sent for its jobs (outbound), so a webhook receiver cannot submit jobs.
The token and both secrets rotate with an overlap (see `producer/secret_ring.py` and `KeyRotation`).
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

from . import keys, secret_ring
from .jobs.enums import TextEnum

TOKEN_PREFIX = "sdq_"
# fullmatch, never `$`: that would accept a trailing newline.
_TOKEN = re.compile(r"sdq_([0-9a-f]{16})_([A-Za-z0-9_\-]{32,128})")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


class Role(TextEnum):
    """What a key may do."""

    TENANT = "tenant"  # its tenant's jobs, batches, uploads and costs
    ADMIN = "admin"  # what a tenant may, plus the fleet-wide views (/v1/costs, /v1/scaling, /v1/fleet)
    SCALING = "scaling"  # read-only: GET /v1/scaling and nothing else (the credential KEDA holds)

    @property
    def submits(self) -> bool:
        """Whether the role may submit and see jobs (every role but `scaling`)."""
        return self is not Role.SCALING


#: Hash fields of a key's secret rings (JSON, newest first) and of the token it replaced during an overlap.
INBOUND, OUTBOUND = "inbound_secrets", "outbound_secrets"
PREV_DIGEST, PREV_DIGEST_UNTIL = "prev_digest", "prev_digest_until"
#: Before roles and separate secrets, one `webhook_secret` did both jobs; keys made then keep it for both.
LEGACY_SECRET = "webhook_secret"


class ApiKey(BaseModel):
    """One API key's record (never its token). Limits left `None` fall back to the server's defaults.

    The secret tuples hold the values live when the record was read, newest first (several during a rotation)."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    name: str = ""
    role: Role = Role.TENANT
    created_at: datetime
    revoked: bool = False
    rate_per_s: float | None = Field(default=None, description="Sustained requests per second.")
    burst: int | None = Field(default=None, description="Requests allowed at once above the sustained rate.")
    max_queued_jobs: int | None = Field(default=None, description="Jobs of this key that may wait in the queue.")
    webhook_url: str | None = Field(default=None, description="Default webhook endpoint for this key's jobs.")
    inbound_secrets: tuple[str, ...] = Field(
        repr=False, description="`whsec_…` secrets that verify jobs pushed to /v1/hooks/jobs with this key."
    )
    outbound_secrets: tuple[str, ...] = Field(
        repr=False, description="`whsec_…` secrets that sign the webhooks of this key's jobs (every one signs)."
    )

    @property
    def inbound_secret(self) -> str:
        """The current inbound secret (give it to the system that pushes jobs)."""
        return self.inbound_secrets[0]

    @property
    def outbound_secret(self) -> str:
        """The current outbound secret (give it to your webhook receivers)."""
        return self.outbound_secrets[0]


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


def new_webhook_secret() -> str:
    """A fresh `whsec_…` secret: the Standard Webhooks format, whsec_ + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_token(key_id: str) -> str:
    """A fresh token for key `key_id`."""
    return f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def digest_matches(fields: Mapping[str, str], token: str, *, now: float) -> bool:
    """Whether `token` is the key's current token, or the one it replaced while their overlap lasts."""
    digest = token_digest(token)
    if hmac.compare_digest(fields.get("digest", ""), digest):
        return True
    previous, until = fields.get(PREV_DIGEST, ""), float(fields.get(PREV_DIGEST_UNTIL) or 0)
    return bool(previous) and until > now and hmac.compare_digest(previous, digest)


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
        role: Role = Role.TENANT,
    ) -> tuple[ApiKey, str]:
        """A new key for `tenant`; returns its record and its token (shown this once, never stored)."""
        if not valid_tenant(tenant):
            raise ValueError("tenant must be 1–64 letters, digits, '_', '.' or '-', starting with a letter or digit")
        key_id = secrets.token_hex(8)
        token = new_token(key_id)
        fields: dict[str, str] = {
            "id": key_id,
            "tenant": tenant,
            "name": name,
            "role": Role(role).value,
            "digest": token_digest(token),
            "created_at": repr(time.time()),
            "revoked": "0",
            INBOUND: secret_ring.encode([secret_ring.Held(new_webhook_secret())]),
            OUTBOUND: secret_ring.encode([secret_ring.Held(new_webhook_secret())]),
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
        if not digest_matches(fields, token, now=time.time()):
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


def ring(fields: Mapping[str, str], which: str) -> list[secret_ring.Held]:
    """The key's `INBOUND` or `OUTBOUND` ring as stored (a key made before rings: its one legacy secret)."""
    if which in fields:
        return secret_ring.decode(fields[which])
    legacy = fields.get(LEGACY_SECRET)
    return [secret_ring.Held(legacy)] if legacy else []


def key_from_fields(f: Mapping[str, str], *, now: float | None = None) -> ApiKey:
    """An `ApiKey` from its Redis hash fields, with the secrets live at `now` (default: the clock)."""
    at = time.time() if now is None else now
    return ApiKey(
        id=f["id"],
        tenant=f["tenant"],
        name=f.get("name", ""),
        role=Role(f.get("role") or Role.TENANT.value),
        created_at=datetime.fromtimestamp(float(f["created_at"]), tz=timezone.utc),
        revoked=f.get("revoked") == "1",
        rate_per_s=float(f["rate_per_s"]) if f.get("rate_per_s") else None,
        burst=int(f["burst"]) if f.get("burst") else None,
        max_queued_jobs=int(f["max_queued_jobs"]) if f.get("max_queued_jobs") else None,
        webhook_url=f.get("webhook_url") or None,
        inbound_secrets=secret_ring.live(ring(f, INBOUND), at),
        outbound_secrets=secret_ring.live(ring(f, OUTBOUND), at),
    )
