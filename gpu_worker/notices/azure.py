"""Azure: Scheduled Events (`Preempt`, `Terminate`) from the instance metadata service, acknowledged once safe."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .base import Notice

SCHEDULED_EVENTS = "/metadata/scheduledevents"
API_VERSION = "2020-07-01"
#: IMDS refuses requests without this header (a guard against SSRF through the VM).
METADATA_HEADERS = {"Metadata": "true"}
#: Event types after which this VM is gone.
_FATAL = frozenset({"Preempt", "Terminate"})


class AzureNotices:
    """Polls Scheduled Events for a `Preempt` (spot eviction, at least 30 s ahead) or `Terminate` of this VM.

    `acknowledge` POSTs `StartRequests` for the event, which lets Azure go ahead before `NotBefore`: call it once
    the job in flight is checkpointed or finished.
    """

    provider = "azure"

    def __init__(self, base_url: str, *, notice_s: float = 30.0, timeout_s: float = 2.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=METADATA_HEADERS, timeout=timeout_s)
        self.notice_s = notice_s
        self._vm_name: str | None = None

    def poll(self) -> Notice | None:
        response = self.http.get(SCHEDULED_EVENTS, params={"api-version": API_VERSION})
        response.raise_for_status()
        for event in response.json().get("Events", []):
            if event.get("EventType") in _FATAL and self._concerns_me(event):
                return Notice(
                    provider=self.provider,
                    kind="terminate",
                    deadline=_deadline(event.get("NotBefore", ""), self.notice_s),
                    event_id=str(event["EventId"]),
                    detail=f"scheduled event {event['EventType']} not before {event.get('NotBefore') or '?'}",
                )
        return None

    def acknowledge(self, notice: Notice) -> None:
        response = self.http.post(
            SCHEDULED_EVENTS,
            params={"api-version": API_VERSION},
            json={"StartRequests": [{"EventId": notice.event_id}]},
        )
        response.raise_for_status()

    def close(self) -> None:
        self.http.close()

    def _concerns_me(self, event: dict[str, Any]) -> bool:
        # Events list every VM of the availability set or scale set they touch; only ours matters.
        resources = event.get("Resources") or []
        if not resources:
            return True
        if self._vm_name is None:
            response = self.http.get(
                "/metadata/instance/compute/name", params={"api-version": "2021-02-01", "format": "text"}
            )
            response.raise_for_status()
            self._vm_name = response.text.strip()
        return self._vm_name in resources


def _deadline(not_before: str, default_s: float) -> float:
    """`NotBefore` (RFC 1123, e.g. `Mon, 19 Sep 2016 18:29:47 GMT`; empty once started) → epoch seconds."""
    if not not_before:
        return time.time() + default_s
    return parsedate_to_datetime(not_before).timestamp()
