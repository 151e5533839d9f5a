"""What a spot/preemption notice is, the protocol of a provider's poller, and the state jobs in flight read."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal, Protocol

#: `terminate`: the machine goes away at `deadline` (checkpoint what cannot finish); `rebalance`: it is at elevated
#: risk (AWS rebalance recommendation): take no new work, finish what runs.
NoticeKind = Literal["terminate", "rebalance"]


@dataclass(frozen=True)
class Notice:
    """One notice from the cloud's metadata service."""

    provider: str
    kind: NoticeKind
    #: Wall-clock time (epoch seconds) the machine is reclaimed; None when the provider names none (rebalance).
    deadline: float | None
    #: The provider's id for the event (Azure acknowledges it by id), else "".
    event_id: str = ""
    detail: str = ""


class NoticeSource(Protocol):
    """A provider's notice poller."""

    provider: str

    def poll(self) -> Notice | None:
        """The current notice, or None. May block up to the poll interval (GCP's `wait_for_change`)."""
        ...

    def acknowledge(self, notice: Notice) -> None:
        """Tell the provider the machine may go now (Azure `StartRequests`); a no-op where there is no such call."""
        ...

    def close(self) -> None:
        """Release the HTTP client."""
        ...


class Interruption:
    """Shared between the spot watcher (which sets it) and the jobs in flight (which read it at every step)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.notice: Notice | None = None
        #: `time.monotonic()` when the notice was seen.
        self.seen_at: float | None = None

    def set(self, notice: Notice) -> None:
        """Record `notice` (the first `terminate` wins over an earlier `rebalance`)."""
        if self.notice is not None and (self.notice.kind == "terminate" or notice.kind == "rebalance"):
            return
        self.notice = notice
        self.seen_at = self.seen_at or time.monotonic()
        self._event.set()

    def is_set(self) -> bool:
        """Whether a notice has arrived."""
        return self._event.is_set()

    def seconds_left(self) -> float | None:
        """Seconds until the machine is reclaimed; None when there is no deadline (finish what runs)."""
        notice = self.notice
        if notice is None or notice.deadline is None:
            return None
        return notice.deadline - time.time()
