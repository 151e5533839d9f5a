"""The janitor: no job stays stuck `running` after its worker died, none stays `queued` without a message.

* A running job whose lease expired (its worker stopped renewing) is requeued, or failed with `worker_lost` once
  it has used its attempts. The change is one Lua call fenced by the attempt number and re-checking the lease, so
  a worker that finishes at the same moment either wins (the janitor does nothing) or is fenced off (its late
  result is refused): the job reaches `succeeded` exactly once.
* A queued job whose Dramatiq message is gone (Redis lost it, or a producer died between recording and sending)
  is re-enqueued. A job counts as lost only when two sweeps at least `lost_message_grace_s` apart found no
  message for it, so the instant between recording and sending a job never triggers a duplicate.

Each sweep costs what changed, never a read of every queued message: the running jobs (as many as the fleet
runs), the finished records that expired since (`JobStore.unindex_expired`), and one count check
(`producer.msgref.line_counts`, O(1)): every queued or running job has a message until its worker acks it, so
while the queues hold at least as many messages as there are such jobs (less those of jobs canceled in line),
nothing is lost and the sweep looks at no job. Only when they hold fewer does it look, the line's front first
(what workers take next), then the next `lost_message_slice` jobs from a cursor that walks the line over
successive sweeps, until it has found as many as are missing. Whether a job has a message is one HMGET and a few
HEXISTS (`producer.msgref.unsent`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name

from .. import keys
from ..broker import BATCH_ACTOR, send
from ..errors import JobNotFoundError
from ..jobs import JobMessage, JobStatus
from ..msgref import line_counts, prune_stale, unsent
from ..outcomes import ReapOutcome
from ..store import JobStore
from .work import NAMESPACE

log = logging.getLogger(__name__)


@dataclass
class JanitorReport:
    """What one sweep did (or, in a dry run, would do)."""

    requeued: list[str] = field(default_factory=list)  #: expired leases handed back for a new attempt
    failed: list[str] = field(default_factory=list)  #: expired leases out of attempts: failed `worker_lost`
    canceled: list[str] = field(default_factory=list)  #: expired leases or lost messages of jobs asked to cancel
    reenqueued: list[str] = field(default_factory=list)  #: queued jobs whose lost message was sent again
    expired: list[str] = field(default_factory=list)  #: dry run: expired leases seen
    suspects: int = 0  #: queued jobs without a message, within their grace period
    unindexed: int = 0  #: finished jobs and batches whose records expired, taken out of every index

    def describe(self) -> str:
        """One line for logs and `--dry-run`."""
        return (
            f"janitor requeued={len(self.requeued)} failed={len(self.failed)} canceled={len(self.canceled)}"
            f" reenqueued={len(self.reenqueued)} expired_leases={len(self.expired)} suspects={self.suspects}"
            f" unindexed={self.unindexed}"
        )


def message_job_ids(client: redis.Redis, queue: str, *, namespace: str = NAMESPACE) -> set[str]:
    """Ids of the jobs that have a message on `queue` or its delay queue (pending, delayed or fetched)."""
    found: set[str] = set()
    for name in (queue, dq_name(queue)):
        for _, data in client.hscan_iter(f"{namespace}:{name}.msgs", count=1000):
            found.add(_job_id(data))
    return found


def _job_id(data: bytes) -> str:
    try:
        message = json.loads(data)
        args = message.get("args") or [{}]
        job_id = args[0].get("job_id") if isinstance(args[0], dict) else None
        return str(job_id or message.get("message_id", ""))
    except (ValueError, AttributeError, IndexError):
        return ""


class Janitor:
    """Sweeps expired leases and lost messages of one queue."""

    def __init__(
        self,
        store: JobStore,
        broker: RedisBroker,
        *,
        queue: str,
        batch_queue: str | None = None,
        max_attempts: int,
        lease_grace_s: float,
        lost_message_grace_s: float,
        lost_message_slice: int = 2000,
        line_front: int = 500,
    ) -> None:
        self.store = store
        self.broker = broker
        self.queue = queue
        self.batch_queue = batch_queue
        self.max_attempts = max_attempts
        self.lease_grace_s = lease_grace_s
        self.lost_message_grace_s = lost_message_grace_s
        self.lost_message_slice = lost_message_slice
        self.line_front = line_front
        self._suspects: dict[str, float] = {}  # job id → when a sweep first found it without a message
        self._cursor: float | None = None  # the score in line the walk goes on from (None: from the start)
        self._stale_cursor = 0  # where the prune of the canceled-in-line set goes on from
        self._walk = False  # this sweep's count check found messages missing: look at the line

    def sweep(self, *, dry_run: bool = False) -> JanitorReport:
        """One pass over running and queued jobs."""
        report = JanitorReport()
        if not dry_run:
            report.unindexed = self.store.unindex_expired()
        reaped = self._reap_expired(report, dry_run=dry_run)
        self._find_lost(report, reaped, dry_run=dry_run)
        return report

    def _messages_missing(self, *, dry_run: bool) -> bool:
        """Whether more jobs lack a message than the suspects already found explain (O(1) counts; a prune step
        over the jobs canceled in line first, when their messages could be what the count is short of)."""
        client, queues = self.store.client, self._queues()
        counts = line_counts(client, queues, self.broker.namespace)
        if counts.deficit > len(self._suspects) and counts.stale and not dry_run:
            self._stale_cursor = prune_stale(
                client, queues, self.broker.namespace, cursor=self._stale_cursor, count=self.lost_message_slice
            )
            counts = line_counts(client, queues, self.broker.namespace)
        return counts.deficit > len(self._suspects)

    def _queues(self) -> list[str]:
        return [q for q in (self.queue, self.batch_queue) if q]

    def _to_check(self, reaped: Iterable[str]) -> list[str]:
        """This sweep's jobs to look for a message: the suspects and the jobs just requeued, and, only when the
        count check said messages are missing (`_walk`), the line's front and the walk's next slice."""
        known = list(dict.fromkeys([*self._suspects, *reaped]))
        if not self._walk:
            return known
        client = self.store.client
        line_key = keys.index(JobStatus.QUEUED.value)
        front = client.zrange(line_key, 0, self.line_front - 1)
        lower = f"({self._cursor!r}" if self._cursor is not None else "-inf"
        rows = cast(
            list[tuple[bytes, float]],
            client.zrangebyscore(line_key, lower, "+inf", start=0, num=self.lost_message_slice, withscores=True),
        )
        self._cursor = rows[-1][1] if len(rows) >= self.lost_message_slice else None  # the end: start over
        found = [m.decode() for m in cast(list[bytes], front)] + [m.decode() for m, _ in rows]
        return list(dict.fromkeys([*found, *known]))

    def _reap_expired(self, report: JanitorReport, *, dry_run: bool) -> set[str]:
        client = self.store.client
        running = [m.decode() for m in client.zrange(keys.index(JobStatus.RUNNING.value), 0, -1)]  # type: ignore[union-attr]
        seconds, micros = client.time()
        now = float(seconds) + float(micros) / 1e6  # Redis's clock: the one leases are written in
        reaped: set[str] = set()
        for job_id, (lease, attempts, status) in zip(running, self.store.leases(running), strict=True):
            if status != JobStatus.RUNNING or attempts is None or lease + self.lease_grace_s > now:
                continue
            if dry_run:
                report.expired.append(job_id)
                continue
            note = f"attempt {attempts} lost its worker (lease expired); the janitor took the job back"
            outcome = self.store.reap(
                job_id, attempts, grace_s=self.lease_grace_s, max_attempts=self.max_attempts, note=note
            )
            if outcome.outcome is ReapOutcome.REQUEUED:
                log.warning("job %s: attempt %s lost its worker; requeued", job_id, attempts)
                report.requeued.append(job_id)
                reaped.add(job_id)
            elif outcome.outcome is ReapOutcome.CANCELED:
                log.warning("job %s: attempt %s lost its worker after a cancel: canceled", job_id, attempts)
                report.canceled.append(job_id)
            elif outcome.outcome is ReapOutcome.FAILED:
                log.warning("job %s: attempt %s lost its worker, no attempts left: failed", job_id, attempts)
                report.failed.append(job_id)
        return reaped

    def _find_lost(self, report: JanitorReport, reaped: Iterable[str], *, dry_run: bool) -> None:
        reaped = set(reaped)
        self._walk = self._messages_missing(dry_run=dry_run)
        checked = self._to_check(reaped)
        missing = unsent(self.store.client, checked, self._queues(), self.broker.namespace)
        now = time.monotonic()
        self._suspects = {job_id: self._suspects.get(job_id, now) for job_id in missing}
        for job_id, first_seen in list(self._suspects.items()):
            # A job the janitor itself just requeued has no producer about to send its message: no grace needed.
            if job_id not in reaped and now - first_seen < self.lost_message_grace_s:
                report.suspects += 1
                continue
            if dry_run:
                report.reenqueued.append(job_id)
                continue
            found = self._reenqueue(job_id)
            if found == "reenqueued":
                report.reenqueued.append(job_id)
            elif found == "canceled":
                report.canceled.append(job_id)
            del self._suspects[job_id]

    def _reenqueue(self, job_id: str) -> str | None:
        try:
            record = self.store.get(job_id)
        except JobNotFoundError:
            return None
        if record.status is not JobStatus.QUEUED:
            return None
        if record.cancel_requested:  # a cancel wins: end it now rather than leave it queued with no message
            return "canceled" if self.store.cancel(job_id) is JobStatus.CANCELED else None
        message = JobMessage(job_id=job_id, request=record.request, checkpoint=record.checkpoint)
        if record.batch_id and self.batch_queue:  # back where it came from, behind interactive jobs
            send(self.broker, self.batch_queue, message, actor=BATCH_ACTOR)
        else:
            send(self.broker, self.queue, message)
        log.warning("job %s: queued without a message; re-enqueued", job_id)
        return "reenqueued"
