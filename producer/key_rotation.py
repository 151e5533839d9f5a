"""Rotating an API key's token or one of its webhook secrets, with an overlap during which the old one still works.

Each rotation is one optimistic transaction on the key's hash (WATCH, then MULTI/EXEC), so two operators rotating
at once cannot lose a value: the second retries on the first's result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import redis

from . import keys, secret_ring
from .apikeys import (
    INBOUND,
    OUTBOUND,
    PREV_DIGEST,
    PREV_DIGEST_UNTIL,
    new_token,
    new_webhook_secret,
    ring,
    token_digest,
)

Which = Literal["inbound", "outbound"]
_FIELD = {"inbound": INBOUND, "outbound": OUTBOUND}


class UnknownKeyError(LookupError):
    """No such key, or it is revoked (a revoked key is not rotated: make a new one)."""


@dataclass(frozen=True)
class Rotated:
    """The new value (shown once) and until when the values it replaced keep working (Unix seconds)."""

    value: str
    old_valid_until: float


class KeyRotation:
    """Rotates keys stored by `KeyStore` in the same Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def token(self, key_id: str, *, overlap_s: float) -> Rotated:
        """A new token for the key; the old one keeps working `overlap_s` more (0: it stops at once). Only the
        token just replaced overlaps: rotating twice within an overlap ends the oldest at once."""
        token = new_token(key_id)
        now = time.time()

        def apply(pipe: redis.client.Pipeline) -> None:
            fields = self._live_fields(pipe, key_id)
            pipe.multi()
            pipe.hset(keys.api_key(key_id), "digest", token_digest(token))
            if overlap_s > 0:
                previous = {PREV_DIGEST: fields["digest"], PREV_DIGEST_UNTIL: repr(now + overlap_s)}
                pipe.hset(keys.api_key(key_id), mapping=previous)  # type: ignore[arg-type]
            else:
                pipe.hdel(keys.api_key(key_id), PREV_DIGEST, PREV_DIGEST_UNTIL)

        self.client.transaction(apply, keys.api_key(key_id))
        return Rotated(token, now + overlap_s)

    def secret(self, key_id: str, which: Which, *, overlap_s: float) -> Rotated:
        """A new inbound or outbound `whsec_…` secret; the live ones keep working `overlap_s` more."""
        secret = new_webhook_secret()
        now = time.time()

        def apply(pipe: redis.client.Pipeline) -> None:
            fields = self._live_fields(pipe, key_id)
            new_ring = secret_ring.rotated(ring(fields, _FIELD[which]), secret, now=now, overlap_s=overlap_s)
            pipe.multi()
            pipe.hset(keys.api_key(key_id), _FIELD[which], secret_ring.encode(new_ring))

        self.client.transaction(apply, keys.api_key(key_id))
        return Rotated(secret, now + overlap_s)

    @staticmethod
    def _live_fields(pipe: redis.client.Pipeline, key_id: str) -> dict[str, str]:
        raw: dict[bytes, bytes] = pipe.hgetall(keys.api_key(key_id))  # type: ignore[assignment]
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        if not fields or fields.get("revoked") == "1":
            raise UnknownKeyError(f"no live key {key_id!r}")
        return fields
