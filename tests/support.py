"""Helpers shared by the tests: polling, and a running API + workers (a `LocalStack`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from producer import Client
from producer.localstack import LocalStack, free_port

__all__ = ["Stack", "free_port", "start_stack", "wait_for"]

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
