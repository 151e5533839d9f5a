"""Queue position: a queued job's place in line, read in O(log n) (`JobRecord.queue_position`).

Workers take interactive jobs before the jobs of submitted batches: a worker consumes both queues and runs its
prefetched messages in actor-priority order, fetches batch messages only while no interactive one waits (its batch
queue yields, `producer.doorbell`), and its GPU executor ranks what it holds by (priority, creation), see
gpu_worker/actors.py and gpu_worker/cohorts.py. Each queue is first in, first out (Dramatiq pushes on the
right and fetches from the left). The line mirrors that: one sorted set, `keys.LINE` (the global index of queued
jobs), whose scores put every interactive job before every batch job and each lane in the order its jobs entered
the queue, so `ZRANK` is the number of jobs that run before a job.

A job enters the line in the Lua step that makes it `queued` (lua/create.lua, lua/batch.lua) and leaves it in the
step that takes it out: a claim, a cancel, a failure (lua/_moved.lua, which every status change calls). A job
handed back to `queued` (a spot hand-off, a transient failure, a lease the janitor reaped) goes to the back of its
lane with a fresh number, because that is where its message goes: the hand-off and the janitor send a new one,
Dramatiq re-enqueues a retry after its backoff, and Dramatiq's maintenance returns a dead worker's messages to the
tail of the queue. (A retry still in Dramatiq's delay queue is counted in line meanwhile: it runs once its
backoff ends, usually before the jobs behind it do.)
"""

from __future__ import annotations

import redis

from . import keys
from .jobs import JobStatus

#: Score offset of the batch lane. Scores are the shared sequence counter (`keys.SEQUENCE`), far below 2**50, and
#: stay exact as floats up to 2**53.
BATCH_LANE = 2**50


def score(seq: int, *, batch: bool) -> int:
    """A job's score in the line: its lane, then the sequence number it got when it entered the queue."""
    return BATCH_LANE + seq if batch else seq


def lua_prelude() -> str:
    """The Lua side of `score` (prepended to every script, see `producer.scripts`)."""
    return (
        f"local SDQ_BATCH_LANE = {BATCH_LANE}\n"
        "local function sdq_line_score(batch, seq)\n"
        '  if batch and batch ~= "" then return SDQ_BATCH_LANE + tonumber(seq) end\n'
        "  return tonumber(seq)\n"
        "end\n"
    )


def position(status: JobStatus, rank: int | None) -> int | None:
    """`JobRecord.queue_position` from the job's `ZRANK` in the line (None unless it is queued)."""
    return rank if status is JobStatus.QUEUED and rank is not None else None


def newest(client: redis.Redis, cursor: str | None, limit: int) -> list[tuple[bytes, float]]:
    """Up to `limit` (member, sequence number) of the line, the most recently queued first, below `cursor` (a
    sequence number): the global `GET /v1/jobs?status=queued`, from both lanes, in O(log n + limit)."""
    pipe = client.pipeline(transaction=False)
    for base in (0, BATCH_LANE):
        top = base + int(cursor) if cursor else base + BATCH_LANE
        pipe.zrevrangebyscore(keys.LINE, f"({top}", base, start=0, num=limit, withscores=True)
    interactive, batch = pipe.execute()
    rows = [(member, seq) for member, seq in interactive] + [(member, seq - BATCH_LANE) for member, seq in batch]
    rows.sort(key=lambda row: row[1], reverse=True)
    return rows[:limit]
