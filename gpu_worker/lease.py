"""Keeping a running job's lease alive, and hearing about cancellation, while a job runs."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

from producer.jobs import Progress
from producer.store import JobStore, Touch

log = logging.getLogger(__name__)


class Lease:
    """Renews one attempt's lease every `lease_s / 3` seconds in a thread; `report` does it inline with progress.

    `lost` is set when another attempt took the job over (or it ended); `cancel` when a client asked to stop.
    """

    def __init__(self, store: JobStore, job_id: str, attempt: int, *, lease_s: float) -> None:
        self.store = store
        self.job_id = job_id
        self.attempt = attempt
        self.lease_s = lease_s
        self.lost = threading.Event()
        self.cancel = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id[:8]}", daemon=True)

    def report(self, progress: Progress | None = None) -> None:
        """Renew now, recording `progress`; updates `lost` and `cancel`."""
        self.apply(self.store.touch(self.job_id, self.attempt, lease_s=self.lease_s, progress=progress))

    def apply(self, touch: Touch) -> None:
        """Take in the outcome of a renewal made for this lease (`report`, or several leases' at once)."""
        if not touch.held:
            self.lost.set()
        if touch.cancel_requested:
            self.cancel.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.report()
            except redis.RedisError as exc:  # keep trying: the lease has slack for a short Redis blip
                log.warning("lease renewal of %s failed: %s", self.job_id, exc)
            if self.lost.is_set():
                return

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
