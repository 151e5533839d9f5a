"""The last hour of the controller's decisions, kept in Redis for the dashboard's fleet chart.

One sample every `SAMPLE_S` (work remaining, workers holding, desired workers, the provider's capacity) goes to
the head of a capped list: a fixed 360 entries, ~40 KB, written by one process. The list is history, not a queue:
trimming it loses nothing anyone waits for.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import redis

from .. import keys
from .scaler import Decision

#: The list of samples, newest first. (Kept beside its only writer and reader; sdq:* like every sdqueue key.)
HISTORY_KEY = keys.FLEET_HISTORY
#: Seconds between samples, and how many are kept: one hour.
SAMPLE_S = 10.0
MAX_SAMPLES = 360


@dataclass(frozen=True)
class FleetSample:
    """The fleet at one moment, as the controller saw it."""

    at: float  #: unix seconds
    work_remaining: int
    pending: int
    in_flight: int
    workers_holding: int
    desired: int
    capacity: int | None  #: the provider's size; None when it reports none (`provider none`)
    action: str


class FleetHistory:
    """Writes (at most one sample per `sample_s`) and reads the samples."""

    def __init__(self, client: redis.Redis, *, sample_s: float = SAMPLE_S) -> None:
        self.client = client
        self.sample_s = sample_s
        self._last = 0.0

    def record(self, decision: Decision, *, now: float | None = None) -> bool:
        """Keep `decision` if a sample is due; returns whether it was written."""
        at = time.time() if now is None else now
        if at - self._last < self.sample_s:
            return False
        self._last = at
        work = decision.work
        sample = FleetSample(
            at=round(at, 3),
            work_remaining=work.work_remaining,
            pending=work.pending,
            in_flight=work.in_flight,
            workers_holding=work.live_workers,
            desired=decision.desired,
            capacity=decision.target if decision.target is not None else decision.capacity,
            action=decision.action,
        )
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(HISTORY_KEY, json.dumps(asdict(sample)))
        pipe.ltrim(HISTORY_KEY, 0, MAX_SAMPLES - 1)
        pipe.execute()
        return True

    def read(self, *, since: float | None = None) -> list[FleetSample]:
        """Samples oldest first (only those at or after `since`, unix s)."""
        raw: list[bytes] = self.client.lrange(HISTORY_KEY, 0, MAX_SAMPLES - 1)  # type: ignore[assignment]
        samples = [FleetSample(**json.loads(item)) for item in reversed(raw)]
        return [s for s in samples if since is None or s.at >= since]
