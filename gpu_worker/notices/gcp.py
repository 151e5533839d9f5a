"""GCP: `instance/preempted` on the metadata server, long-polled with `wait_for_change`."""

from __future__ import annotations

import time

import httpx

from .base import Notice

#: Every request to the metadata server must carry this header (it refuses requests without it).
METADATA_HEADERS = {"Metadata-Flavor": "Google"}


class GcpNotices:
    """Watches `instance/preempted` (`FALSE` → `TRUE` when preemption starts; the VM gets about 30 s).

    After a first plain read, each poll waits on the server for a change (`wait_for_change=true` with the last
    ETag) for up to `wait_s`, so a notice is seen at once rather than at the next poll.
    """

    provider = "gcp"

    def __init__(self, base_url: str, *, notice_s: float = 30.0, wait_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=METADATA_HEADERS, timeout=timeout_s + wait_s)
        self.notice_s = notice_s
        self.wait_s = wait_s
        self._etag: str | None = None
        self._notice: Notice | None = None

    def poll(self) -> Notice | None:
        if self._notice is not None:
            return self._notice
        params: dict[str, str] = {}
        if self._etag is not None:
            params = {"wait_for_change": "true", "last_etag": self._etag, "timeout_sec": str(max(1, int(self.wait_s)))}
        response = self.http.get("/computeMetadata/v1/instance/preempted", params=params)
        response.raise_for_status()
        self._etag = response.headers.get("ETag", self._etag)
        if response.text.strip().upper() == "TRUE":
            # GCP names no deadline: preemption gives the guest `notice_s` (30 s) between soft and hard off.
            self._notice = Notice(self.provider, "terminate", time.time() + self.notice_s, detail="instance/preempted")
        return self._notice

    def acknowledge(self, notice: Notice) -> None:
        """GCP takes no acknowledgement."""

    def close(self) -> None:
        self.http.close()
