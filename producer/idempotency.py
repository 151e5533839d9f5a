"""`Idempotency-Key`: a retried POST returns what the first one made instead of making it again.

Keys are scoped per tenant and per route and live `TTL_S` (a day, like Stripe's). Each remembers the hash of the
request it came with: the same key with another body is refused (422), never silently answered with the first
result. For jobs the check and the creation are one Lua call (lua/create.lua); a batch claims its key first with
`SET NX`, so two concurrent requests with one key make one batch (the loser gets 409 while the winner runs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis

from . import keys
from .errors import IdempotencyConflictError

HEADER = "Idempotency-Key"
TTL_S = 24 * 3600


def body_hash(canonical: bytes) -> str:
    """The fingerprint a key is stored with (of the *validated* request, so formatting does not matter)."""
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class Claim:
    """Outcome of claiming a key: `existing_id` is None when the claim is new (go ahead and create `new_id`)."""

    existing_id: str | None


class IdempotencyStore:
    """Claims and releases keys for routes that create more than one record (batches)."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s

    def claim(self, tenant: str, scope: str, key: str, new_id: str, digest: str) -> Claim:
        """Claim `key` for `new_id`, or report what it already produced; raises `IdempotencyConflictError` when
        the key was used with another body."""
        name = keys.idempotency(tenant, scope, key)
        if self.client.set(name, f"{new_id} {digest}", nx=True, ex=self.ttl_s):
            return Claim(None)
        prior = self.client.get(name)
        if prior is None:  # expired between the two calls: claim again
            return self.claim(tenant, scope, key, new_id, digest)
        prior_id, _, prior_digest = (prior.decode() if isinstance(prior, bytes) else str(prior)).partition(" ")
        if prior_digest != digest:
            raise IdempotencyConflictError(
                f"{HEADER} was already used for {scope[:-1]} {prior_id} with a different request body"
            )
        return Claim(prior_id)

    def release(self, tenant: str, scope: str, key: str) -> None:
        """Forget a claim whose creation failed, so the client's retry can succeed."""
        self.client.delete(keys.idempotency(tenant, scope, key))
