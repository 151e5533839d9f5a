"""AWS: the spot instance-action and the rebalance recommendation, read through IMDSv2."""

from __future__ import annotations

import json
import time
from datetime import datetime

import httpx

from .base import Notice

#: IMDSv2 session tokens live at most 6 hours; ask for that and renew a minute early.
TOKEN_TTL_S = 21600


class ImdsClient:
    """GETs from EC2's instance metadata service (IMDSv2: a PUT for a session token, then GETs carrying it)."""

    def __init__(self, base_url: str, *, timeout_s: float = 2.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._token = ""
        self._token_expires = 0.0

    def get(self, path: str) -> httpx.Response:
        """GET `path` (e.g. `/latest/meta-data/instance-id`), renewing the token once if IMDS refuses it."""
        response = self.http.get(path, headers={"X-aws-ec2-metadata-token": self._session_token()})
        if response.status_code == 401:
            self._token_expires = 0.0
            response = self.http.get(path, headers={"X-aws-ec2-metadata-token": self._session_token()})
        return response

    def text(self, path: str) -> str:
        """The body of `path`; raises `httpx.HTTPStatusError` when IMDS has none."""
        response = self.get(path)
        response.raise_for_status()
        return response.text.strip()

    def _session_token(self) -> str:
        if time.monotonic() >= self._token_expires:
            response = self.http.put(
                "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)}
            )
            response.raise_for_status()
            self._token = response.text.strip()
            self._token_expires = time.monotonic() + TOKEN_TTL_S - 60
        return self._token

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()


class AwsNotices:
    """Polls `spot/instance-action` (404 until the instance is to be stopped or terminated, about 2 minutes ahead)
    and `events/recommendations/rebalance` (an earlier, softer warning)."""

    provider = "aws"

    def __init__(self, base_url: str, *, timeout_s: float = 2.0) -> None:
        self.imds = ImdsClient(base_url, timeout_s=timeout_s)

    def poll(self) -> Notice | None:
        action = self.imds.get("/latest/meta-data/spot/instance-action")
        if action.status_code == 200:
            body = json.loads(action.text)
            return Notice(
                provider=self.provider,
                kind="terminate",
                deadline=_epoch(body["time"]),
                detail=f"spot instance-action {body.get('action', '?')} at {body['time']}",
            )
        rebalance = self.imds.get("/latest/meta-data/events/recommendations/rebalance")
        if rebalance.status_code == 200:
            notice_time = json.loads(rebalance.text).get("noticeTime", "")
            return Notice(self.provider, "rebalance", None, detail=f"rebalance recommendation at {notice_time}")
        return None

    def acknowledge(self, notice: Notice) -> None:
        """EC2 takes no acknowledgement."""

    def close(self) -> None:
        self.imds.close()


def _epoch(iso: str) -> float:
    """`2017-09-18T08:22:00Z` → epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
