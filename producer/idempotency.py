"""`Idempotency-Key`: a retried POST returns what the first one made instead of making it again.

Keys are scoped per tenant and per route and live `TTL_S` (a day, like Stripe's). Each remembers the hash of the
request it came with: the same key with another body is refused (422), never silently answered with the first
result. The check and the creation are one Lua call (lua/create.lua for a job, lua/batch.lua for a batch): two
concurrent requests with one key make one job or batch, and a process that dies half-way leaves no claim behind.
"""

from __future__ import annotations

import hashlib

HEADER = "Idempotency-Key"
TTL_S = 24 * 3600


def body_hash(canonical: bytes) -> str:
    """The fingerprint a key is stored with (of the *validated* request, so formatting does not matter)."""
    return hashlib.sha256(canonical).hexdigest()
