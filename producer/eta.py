"""ETAs: when a job will start and finish, from the fleet's measured throughput (`JobRecord.eta_s`).

Every job a worker finishes goes into a rolling window of its throughput: one small hash per `BUCKET_S` seconds
(`keys.throughput`), expiring once it leaves the window, holding the jobs finished, their images, their summed
run time (claim to settle) and first and last finish times, and the same per size class (width × height × steps).
A reader takes one `Pace` snapshot of the window and of the live workers (`keys.WORKER_HOLDINGS`, which every
worker refreshes on its heartbeat clock) in one round trip, and a `Forecaster` caches it for a second, so an ETA
on every read, on every page and on every live stream costs Redis almost nothing.

The estimate: jobs start at the rate the fleet finished them over the window (its last minute when that holds
`RECENT_ENOUGH` jobs, so a change of pace shows within a minute), `finished / (span + mean run time)`, which is
exact for one worker running jobs back to back, and for cohorts of k jobs finishing together; a job with `p` jobs
ahead starts after the `p` ahead of it and, when jobs run, half a job's time on average: `(p + 0.5) / rate`. It
finishes one run time of its size class later (the fleet's mean when its class has not run in the window). A
running job finishes its class's run time after it started. With no live worker there is no estimate, only the
reason: the controller scales from zero on queued work, and nothing has a rate yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from . import keys
from .jobs import Eta, JobRecord, JobRequest, JobStatus

#: Width of one bucket of the throughput window, and how many buckets the window holds (the current one too).
BUCKET_S = 10
WINDOW_BUCKETS = 12
#: The estimate reads only the most recent buckets when they hold enough finished jobs: it follows a fleet whose
#: pace changed (a worker added, a slow first minute behind it) within a minute, and the whole window otherwise.
RECENT_BUCKETS = 6
RECENT_ENOUGH = 10
#: How long a snapshot serves readers in one process.
SNAPSHOT_TTL_S = 1.0

NO_WORKERS = "no workers; the controller is starting capacity"
NO_THROUGHPUT = "workers are up but no job finished in the last {window:g} s; measuring throughput"


def size_class(request: JobRequest) -> str:
    """The throughput window's class of a job: its size and steps (what its run time mostly depends on)."""
    return f"{request.width}x{request.height}x{request.steps}"


def record_finish(
    client: redis.Redis, request: JobRequest, run_s: float, *, images: int, at: float | None = None
) -> None:
    """Add one finished job (its run time from claim to settle) to the throughput window (the worker calls it
    after a job succeeded). Best effort, like every statistic: the caller logs a Redis error and moves on."""
    at = time.time() if at is None else at
    key = keys.throughput(int(at // BUCKET_S))
    cls = size_class(request)
    pipe = client.pipeline(transaction=True)
    pipe.hincrby(key, "n", 1)
    pipe.hincrby(key, "img", images)
    pipe.hincrbyfloat(key, "s", run_s)
    pipe.hsetnx(key, "t0", repr(at))
    pipe.hset(key, "t1", repr(at))
    pipe.hincrby(key, f"{cls}:n", 1)
    pipe.hincrbyfloat(key, f"{cls}:s", run_s)
    pipe.expire(key, BUCKET_S * (WINDOW_BUCKETS + 1))
    pipe.execute()


@dataclass(frozen=True)
class Pace:
    """The fleet at one moment: live workers, jobs running, and its throughput over the window."""

    at: float
    workers: int
    running: int
    finished: int = 0
    run_s: float = 0.0  #: summed run time of the jobs finished
    first: float = 0.0  #: first and last finish times in the window
    last: float = 0.0
    classes: dict[str, tuple[int, float]] = field(default_factory=dict)  #: size class → (jobs, summed run time)

    @property
    def rate(self) -> float | None:
        """Jobs per second the fleet finished over the window (None before any finished)."""
        if not self.finished:
            return None
        return self.finished / (self.last - self.first + self.run_s / self.finished)

    def run_time(self, request: JobRequest | None) -> float | None:
        """Mean run time of a job like `request` (its size class, else any job) over the window."""
        jobs, seconds = self.classes.get(size_class(request), (0, 0.0)) if request is not None else (0, 0.0)
        if jobs:
            return seconds / jobs
        return self.run_s / self.finished if self.finished else None

    def estimate(self, ahead: int, request: JobRequest | None) -> Eta:
        """The ETA of a queued job with `ahead` jobs before it."""
        rate, run_s = self.rate, self.run_time(request)
        if not self.workers:
            return Eta(reason=NO_WORKERS)
        if rate is None or run_s is None:
            return Eta(reason=NO_THROUGHPUT.format(window=BUCKET_S * WINDOW_BUCKETS))
        start = (ahead + (0.5 if self.running else 0.0)) / rate
        return Eta(start=round(start, 1), finish=round(start + run_s, 1))

    def remaining(self, record: JobRecord) -> Eta:
        """The ETA of a running job: its class's run time after it started."""
        run_s = self.run_time(record.request)
        if not self.workers:
            return Eta(start=0.0, reason=NO_WORKERS)
        if run_s is None or record.started_at is None:
            return Eta(start=0.0, reason=NO_THROUGHPUT.format(window=BUCKET_S * WINDOW_BUCKETS))
        return Eta(start=0.0, finish=round(max(0.0, record.started_at.timestamp() + run_s - self.at), 1))

    def remaining_of(self, running: int) -> Eta:
        """When `running` jobs started a while ago have all finished: a mean run time at most."""
        run_s = self.run_time(None)
        if not self.workers:
            return Eta(start=0.0, reason=NO_WORKERS)
        if run_s is None:
            return Eta(start=0.0, reason=NO_THROUGHPUT.format(window=BUCKET_S * WINDOW_BUCKETS))
        return Eta(start=0.0, finish=round(run_s, 1))


def read_pace(client: redis.Redis, *, now: float | None = None) -> Pace:
    """A snapshot of the fleet: one round trip (the window's buckets, live workers, running jobs)."""
    now = time.time() if now is None else now
    current = int(now // BUCKET_S)
    pipe = client.pipeline(transaction=False)
    pipe.zcount(keys.WORKER_HOLDINGS, now, "+inf")
    pipe.zcard(keys.index(JobStatus.RUNNING.value))
    for bucket in range(current - WINDOW_BUCKETS + 1, current + 1):
        pipe.hgetall(keys.throughput(bucket))
    workers, running, *buckets = pipe.execute()
    recent = buckets[-RECENT_BUCKETS:]
    if sum(int(raw.get(b"n", 0)) for raw in recent) >= RECENT_ENOUGH:
        buckets = recent
    return _pace(now, int(workers), int(running), buckets)


def _pace(now: float, workers: int, running: int, buckets: Sequence[dict[bytes, bytes]]) -> Pace:
    finished, run_s, first, last = 0, 0.0, float("inf"), 0.0
    classes: dict[str, tuple[int, float]] = {}
    for raw in buckets:
        if not raw:
            continue
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        finished += int(fields.get("n", 0))
        run_s += float(fields.get("s", 0))
        first = min(first, float(fields.get("t0", now)))
        last = max(last, float(fields.get("t1", 0)))
        for name, value in fields.items():
            if name.endswith(":n"):
                cls = name[:-2]
                jobs, seconds = classes.get(cls, (0, 0.0))
                classes[cls] = (jobs + int(value), seconds + float(fields.get(f"{cls}:s", 0)))
    if not finished:
        return Pace(now, workers, running)
    return Pace(now, workers, running, finished, run_s, first, max(last, first), classes)


class Forecaster:
    """ETAs for the records a process serves, from a fleet snapshot it refreshes at most once a second."""

    def __init__(self, client: redis.Redis, *, ttl_s: float = SNAPSHOT_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._pace: Pace | None = None
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def pace(self) -> Pace:
        """The current snapshot (read again once it is `ttl_s` old)."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl_s or self._pace is None:
                self._pace, self._read_at = read_pace(self.client), time.monotonic()
            return self._pace

    def eta(self, record: JobRecord) -> Eta | None:
        """The record's ETA: queued and running jobs have one (or a reason why not); finished ones none."""
        if record.status is JobStatus.QUEUED and record.queue_position is not None:
            return self.pace().estimate(record.queue_position, record.request)
        if record.status is JobStatus.RUNNING:
            return self.pace().remaining(record)
        return None

    @staticmethod
    def outlook_at(record: JobRecord, rank: int | None, pace: Pace) -> JobRecord:
        """`outlook` from a place in line and a snapshot read already (the event streams' shared poller reads
        them once for every stream)."""
        if record.status is JobStatus.QUEUED:
            record = record.model_copy(update={"queue_position": rank})
            eta = pace.estimate(rank, record.request) if rank is not None else None
        elif record.status is JobStatus.RUNNING:
            eta = pace.remaining(record)
        else:
            return record
        return record if eta is None else record.model_copy(update={"eta_s": eta})

    def apply(self, record: JobRecord) -> JobRecord:
        """`record` with its `eta_s` filled in."""
        eta = self.eta(record)
        return record if eta is None else record.model_copy(update={"eta_s": eta})

    def outlook(self, record: JobRecord) -> JobRecord:
        """`apply` with the job's place in line read again (a live stream's update; one ZRANK while queued)."""
        if record.status is JobStatus.QUEUED:
            rank = self.client.zrank(keys.LINE, record.id)
            record = record.model_copy(update={"queue_position": None if rank is None else int(rank)})  # type: ignore[arg-type]
        return self.apply(record)

    def batch(self, batch_id: str, *, queued: int, running: int) -> Eta | None:
        """When a batch's last job should finish: the ETA of its last job in line (its last item; past the whole
        line when that one has left it and others wait, e.g. a job handed back to the end), else of its running
        jobs. None once nothing of it is queued or running."""
        if not queued and not running:
            return None
        pace = self.pace()
        if not queued:
            return pace.remaining_of(running)
        last = self.client.lindex(keys.batch_jobs(batch_id), -1)
        pipe = self.client.pipeline(transaction=False)
        pipe.zrank(keys.LINE, last or b"")
        pipe.zcard(keys.LINE)
        rank, length = pipe.execute()
        return pace.estimate(int(rank) if rank is not None else max(0, int(length) - 1), None)
