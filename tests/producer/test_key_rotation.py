"""Rotating an API key's token, inbound secret and outbound secret with an overlap, on a real Redis: during the
overlap the old and the new value both work (outbound messages carry both signatures); after it only the new one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from producer import secret_ring
from producer.apikeys import KeyStore, Role
from producer.key_rotation import KeyRotation, UnknownKeyError
from producer.ratelimit import Limits, RateLimiter
from producer.webhooks.keyring import Keyring
from producer.webhooks.signing import new_secret, signed_headers
from tests.support import make_app

pytestmark = pytest.mark.redis

OVERLAP_S = 1.0
UNLIMITED = Limits(0, 1, 0)


@pytest.fixture
def store(redis_client: redis.Redis) -> KeyStore:
    return KeyStore(redis_client)


def _past_the_overlap() -> None:
    time.sleep(OVERLAP_S + 0.2)


def test_a_rotated_token_overlaps_then_only_the_new_one_works(store: KeyStore, redis_client: redis.Redis) -> None:
    key, old = store.create("acme")
    new = KeyRotation(redis_client).token(key.id, overlap_s=OVERLAP_S).value
    limiter = RateLimiter(redis_client)
    for token in (old, new):  # both checks: the plain one and the one-round-trip Lua admit of the API
        assert store.authenticate(token) is not None and limiter.admit(token, UNLIMITED) is not None
    _past_the_overlap()
    assert store.authenticate(old) is None and limiter.admit(old, UNLIMITED) is None
    assert store.authenticate(new) is not None and limiter.admit(new, UNLIMITED) is not None
    newest = KeyRotation(redis_client).token(key.id, overlap_s=0).value  # no overlap: the old stops at once
    assert store.authenticate(new) is None and store.authenticate(newest) is not None


def test_outbound_messages_carry_both_signatures_during_the_overlap(store: KeyStore, redis_client: redis.Redis) -> None:
    key, _ = store.create("acme")
    new = KeyRotation(redis_client).secret(key.id, "outbound", overlap_s=OVERLAP_S).value
    keyring = Keyring(redis_client, [new_secret()])
    assert keyring.secrets_for(key.id) == [new, key.outbound_secret]  # newest first
    body = b'{"type":"job.succeeded"}'
    headers = signed_headers(keyring.secrets_for(key.id), "msg_1", body)
    assert len(headers["webhook-signature"].split()) == 2
    for receiver_holds in (key.outbound_secret, new):  # a receiver not yet switched, and one switched
        Webhook(receiver_holds).verify(body, headers)
    _past_the_overlap()
    assert keyring.secrets_for(key.id) == [new]
    late = signed_headers(keyring.secrets_for(key.id), "msg_2", body)
    with pytest.raises(WebhookVerificationError):
        Webhook(key.outbound_secret).verify(body, late)
    assert store.get(key.id).outbound_secrets == (new,)  # type: ignore[union-attr]


def _hook(api: TestClient, key_id: str, secret: str) -> int:
    body = json.dumps({"prompt": "pushed", "width": 64, "height": 64}).encode()
    headers = signed_headers([secret], f"msg_{time.time_ns()}", body)
    response = api.post(f"/v1/hooks/jobs?key_id={key_id}", content=body, headers=headers)
    return response.status_code


@pytest.fixture
def api(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(redis_server, tmp_path)) as client:
        yield client


def test_inbound_jobs_verify_against_any_live_inbound_secret(
    api: TestClient, store: KeyStore, redis_client: redis.Redis
) -> None:
    key, _ = store.create("acme")
    assert _hook(api, key.id, key.outbound_secret) == 401  # the receivers' secret never submits
    new = KeyRotation(redis_client).secret(key.id, "inbound", overlap_s=OVERLAP_S).value
    assert _hook(api, key.id, key.inbound_secret) == 202 and _hook(api, key.id, new) == 202
    _past_the_overlap()
    assert _hook(api, key.id, key.inbound_secret) == 401 and _hook(api, key.id, new) == 202


def test_a_scaling_key_cannot_push_jobs_even_when_signed(api: TestClient, store: KeyStore) -> None:
    key, _ = store.create("keda", role=Role.SCALING)
    assert _hook(api, key.id, key.outbound_secret) == 401  # a stranger learns nothing about the key
    assert _hook(api, key.id, key.inbound_secret) == 403


def test_a_key_from_before_separate_secrets_keeps_its_one_secret_until_rotated(
    store: KeyStore, redis_client: redis.Redis
) -> None:
    key, token = store.create("acme")
    legacy = new_secret()
    # What an older version wrote: one `webhook_secret`, no rings and no role.
    redis_client.hdel(f"sdq:apikey:{key.id}", "inbound_secrets", "outbound_secrets", "role")
    redis_client.hset(f"sdq:apikey:{key.id}", "webhook_secret", legacy)
    old = store.authenticate(token)
    assert old is not None and old.role is Role.TENANT
    assert old.inbound_secrets == old.outbound_secrets == (legacy,)
    new = KeyRotation(redis_client).secret(key.id, "inbound", overlap_s=0).value
    split = store.get(key.id)
    assert split is not None and split.inbound_secrets == (new,) and split.outbound_secrets == (legacy,)


def test_rotating_an_unknown_or_revoked_key_is_refused(store: KeyStore, redis_client: redis.Redis) -> None:
    key, _ = store.create("acme")
    store.revoke(key.id)
    for key_id in (key.id, "0" * 16):
        with pytest.raises(UnknownKeyError):
            KeyRotation(redis_client).token(key_id, overlap_s=60)


def test_a_ring_never_extends_an_end_and_drops_what_ended() -> None:
    ring = secret_ring.rotated([secret_ring.Held("a")], "b", now=100.0, overlap_s=50)
    assert ring == [secret_ring.Held("b"), secret_ring.Held("a", 150.0)]
    again = secret_ring.rotated(ring, "c", now=120.0, overlap_s=1000)
    assert again == [secret_ring.Held("c"), secret_ring.Held("b", 1120.0), secret_ring.Held("a", 150.0)]
    assert secret_ring.live(again, 200.0) == ("c", "b")
    assert secret_ring.rotated(again, "d", now=200.0, overlap_s=0)[1:] == []
    assert secret_ring.decode(secret_ring.encode(again)) == again


def test_sdq_keys_create_with_a_role_and_rotate(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    env = {**os.environ, "SDQ_REDIS_URL": redis_server, "SDQ_DATA_DIR": str(tmp_path)}

    def sdq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producer.cli", "keys", *args], env=env, capture_output=True, text=True, timeout=60
        )

    made = sdq("create", "--role", "scaling", "--name", "keda")
    assert made.returncode == 0, made.stderr
    shown = json.loads(made.stdout)
    assert shown["role"] == "scaling" and shown["tenant"] == "scaling"
    assert shown["inbound_secret"] != shown["outbound_secret"]
    rotated = sdq("rotate", shown["id"], "--token", "--outbound", "--overlap", "1h")
    assert rotated.returncode == 0, rotated.stderr
    fresh = json.loads(rotated.stdout)
    assert {"token", "outbound_secret", "old_valid_until"} <= set(fresh) and "inbound_secret" not in fresh
    store = KeyStore(redis_client)
    for token in (shown["token"], fresh["token"]):
        found = store.authenticate(token)
        assert found is not None and found.role is Role.SCALING
    assert found.outbound_secrets == (fresh["outbound_secret"], shown["outbound_secret"])
    for args, code, named in (
        (("rotate", shown["id"]), 2, "--inbound"),
        (("rotate", shown["id"], "--token", "--overlap", "soon"), 2, "--overlap"),
        (("rotate", "0" * 16, "--token"), 1, "0" * 16),
        (("create",), 2, "--tenant"),
    ):
        result = sdq(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == code and len(lines) == 1 and named in lines[0], (args, result.stderr)
