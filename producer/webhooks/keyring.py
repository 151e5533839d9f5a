"""Which secrets sign a message: the API key's own outbound `whsec_…` secrets for its jobs, else the server's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import redis
from filelock import FileLock

from .. import keys, secret_ring
from ..apikeys import LEGACY_SECRET, OUTBOUND, ring
from ..privatefs import private_dir, write_private
from .signing import new_secret, secret_key


class Keyring:
    """Looks up signing secrets. Server secrets are several during a rotation: each message carries all their
    signatures, so receivers holding either the old or the new one accept it."""

    def __init__(self, client: redis.Redis, server_secrets: Sequence[str]) -> None:
        for secret in server_secrets:
            secret_key(secret)  # fail at start-up, not on the first delivery
        if not server_secrets:
            raise ValueError("at least one server webhook secret is needed")
        self.client = client
        self.server_secrets = list(server_secrets)

    def secrets_for(self, key_id: str | None) -> list[str]:
        """The secrets that sign messages of jobs submitted with API key `key_id` (None: no key): every live
        outbound secret of the key, newest first (several while a rotation overlaps), else the server's."""
        if key_id:
            values = self.client.hmget(keys.api_key(key_id), [OUTBOUND, LEGACY_SECRET])
            named = zip((OUTBOUND, LEGACY_SECRET), values, strict=True)
            fields = {name: v.decode() if isinstance(v, bytes) else str(v) for name, v in named if v is not None}
            found = secret_ring.live(ring(fields, OUTBOUND), time.time())
            if found:
                return list(found)
        return self.server_secrets


def server_secrets(configured: Sequence[str], data_dir: Path) -> list[str]:
    """`SDQ_WEBHOOK_SECRETS`, else one secret generated once under the data directory (mode 0600)."""
    if configured:
        return list(configured)
    path = private_dir(data_dir) / "webhook.key"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            write_private(path, new_secret())
        return [path.read_text().strip()]
