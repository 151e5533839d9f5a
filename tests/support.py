"""Helpers shared by the tests: polling, and a running API + workers (a `LocalStack`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from fastapi import FastAPI

from producer import Client
from producer.inputs import InputLimits
from producer.localstack import LocalStack, free_port
from producer.webhooks.ssrf import UrlPolicy

__all__ = ["Stack", "free_port", "make_app", "start_stack", "wait_for"]

T = TypeVar("T")


class Stack(LocalStack):
    """A `LocalStack` with an SDK client factory, for tests."""

    def client(self) -> Client:
        return Client(self.api_url, timeout_s=30)


def start_stack(tmp: Path, redis_url: str, model_cache: Path, **env: str) -> Stack:
    """`sdq api` on a free port against `redis_url`, local storage under `tmp`; no worker yet."""
    full_env = {
        **os.environ,
        "SDQ_REDIS_URL": redis_url,
        "SDQ_DATA_DIR": str(tmp / "data"),
        "SDQ_MODEL_CACHE_DIR": str(model_cache),
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    stack = Stack(full_env, tmp / "logs", log_level="info")
    stack.start()
    return stack


def make_app(
    redis_url: str,
    tmp: Path,
    *,
    auth: bool = True,
    rate_per_s: float = 0.0,
    burst: int = 1,
    max_queued_jobs: int = 0,
    allowed_models: frozenset[str] = frozenset(),
    inputs: InputLimits | None = None,
    input_url_policy: UrlPolicy | None = None,
) -> FastAPI:
    """The real API app in-process (for `fastapi.testclient.TestClient`) on a real Redis, local storage under `tmp`.

    With `auth`, API keys are required (default limits as given; 0 = unlimited); without, it runs open. `inputs` and
    `input_url_policy` bound image inputs (default: the settings' defaults)."""
    from datetime import timedelta

    import redis

    from producer.api import create_app
    from producer.api.auth import Authenticator
    from producer.apikeys import KeyStore
    from producer.broker import make_broker
    from producer.ratelimit import Limits, RateLimiter
    from producer.service import JobService
    from producer.store import JobStore
    from storage import LinkSigner, open_store

    client = redis.Redis.from_url(redis_url)
    service = JobService(
        JobStore(client, ttl_s=3600),
        make_broker(client, heartbeat_timeout_s=60),
        queue="sdq-generate",
        default_model="tiny",
        allowed_models=allowed_models,
    )
    objects = open_store((tmp / "objects").as_uri(), signer=LinkSigner(b"k" * 32, "http://testserver"))
    limits = Limits(rate_per_s, burst, max_queued_jobs)
    authenticator = Authenticator(KeyStore(client), RateLimiter(client), limits) if auth else None
    return create_app(
        service,
        objects,
        url_expiry=timedelta(hours=1),
        auth=authenticator,
        redis_url=redis_url,
        inputs=inputs,
        input_url_policy=input_url_policy,
    )


def wait_for(predicate: Callable[[], T], timeout_s: float = 60.0, interval_s: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval_s)
