"""Sending running jobs' progress from one background thread, so the denoising loop never waits on Redis.

A job's step callback runs on the GPU executor's thread, between two denoising steps of a batch that may hold
several jobs. Writing each job's progress there would put a Redis round trip per job into every step the GPU makes.
Instead the callback leaves the latest progress here and returns; the pump thread sends what is new every
`interval_s`, all jobs in one round trip, which also refreshes each job's cancel and lost flags that the callback
reads. The job's own thread sends the final progress itself (`flush`) before it settles the job.
"""

from __future__ import annotations

import logging
import threading

import redis

from producer.jobs import Progress

from .lease import Lease

log = logging.getLogger(__name__)


class ProgressPump:
    """Latest unsent progress per lease, written to the job store every `interval_s` by one daemon thread."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = max(interval_s, 0.01)
        self._pending: dict[Lease, Progress] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self, lease: Lease, progress: Progress) -> None:
        """Record `progress` for `lease`'s job (cheap: no I/O); the pump sends the latest within `interval_s`."""
        with self._lock:
            self._pending[lease] = progress
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="progress-pump", daemon=True)
                self._thread.start()

    def flush(self, lease: Lease) -> None:
        """Send `lease`'s unsent progress now, in the caller's thread (before the job settles)."""
        with self._lock:
            progress = self._pending.pop(lease, None)
        if progress is not None:
            lease.report(progress)

    def discard(self, lease: Lease) -> None:
        """Forget `lease`'s unsent progress (its job ended)."""
        with self._lock:
            self._pending.pop(lease, None)

    def _loop(self) -> None:
        while not self._wake.wait(self.interval_s):
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                continue
            # One round trip for every job of the running batch: each trip's Python work (and its GIL hand-offs)
            # is taken from the denoising thread.
            by_store: dict[int, list[Lease]] = {}
            for lease in batch:
                by_store.setdefault(id(lease.store), []).append(lease)
            for leases in by_store.values():
                try:
                    touches = leases[0].store.touch_many(
                        [(lease.job_id, lease.attempt, lease.lease_s, batch[lease]) for lease in leases]
                    )
                except redis.RedisError as exc:  # the lease threads retry renewals; progress can wait a beat
                    log.warning("progress of %d job(s) not recorded: %s", len(leases), exc)
                    continue
                for lease, touch in zip(leases, touches, strict=True):
                    lease.apply(touch)
