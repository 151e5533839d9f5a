"""Container healthcheck for every `sdq` role, installed in the image as /usr/local/bin/sdq-healthcheck.

The role is the argument (`api`, `worker`, `controller`, `webhooks`), or else read from PID 1's command line
(`tini -- sdq <role>`). The API must answer GET /healthz; a worker or controller that serves Prometheus metrics
(SDQ_METRICS_PORT, SDQ_CONTROLLER_METRICS_PORT) must answer GET /metrics; any role with SDQ_REDIS_URL must reach
Redis. Exit 0 = healthy.
Only the standard library and redis-py (already in the image) are used, so the check costs ~50 ms.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

_TIMEOUT_S = 4.0
#: The setting that names each role's Prometheus port (unset or empty = no metrics server to probe).
_METRICS_PORT_SETTING = {"worker": "SDQ_METRICS_PORT", "controller": "SDQ_CONTROLLER_METRICS_PORT"}


def _role_of_pid1() -> str:
    try:
        argv = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    for index, arg in enumerate(argv[:-1]):
        if arg.endswith(b"sdq"):
            return argv[index + 1].decode(errors="replace")
    return ""


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _redis_ok(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S).ping())
    except (redis.RedisError, OSError):
        return False


def check(role: str, env: dict[str, str]) -> list[str]:
    """What is wrong with a process of `role` configured by `env`; empty when healthy."""
    problems: list[str] = []
    if role == "api":
        port = env.get("SDQ_PORT", "8000")
        if not _http_ok(f"http://127.0.0.1:{port}/healthz"):
            problems.append(f"GET http://127.0.0.1:{port}/healthz failed")
        return problems  # /healthz already answers only when Redis does
    metrics_port = env.get(_METRICS_PORT_SETTING.get(role, ""), "").strip()
    if metrics_port and not _http_ok(f"http://127.0.0.1:{metrics_port}/metrics"):
        problems.append(f"GET http://127.0.0.1:{metrics_port}/metrics failed")
    redis_url = env.get("SDQ_REDIS_URL", "").strip()
    if redis_url and not _redis_ok(redis_url):
        problems.append("Redis does not answer PING")
    return problems


def main(argv: list[str]) -> int:
    """Entry point: exit status 0 when healthy, 1 otherwise (with the reasons on stderr)."""
    role = argv[1] if len(argv) > 1 else _role_of_pid1()
    problems = check(role, dict(os.environ))
    for problem in problems:
        sys.stderr.write(f"sdq-healthcheck ({role or 'unknown role'}): {problem}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
