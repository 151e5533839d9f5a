"""Every Redis key sdqueue writes, in one place. (Dramatiq's own keys live under `dramatiq:`.)

Derived keys are templates (`JOB = "sdq:job:{job_id}"`). The Python functions below format them, and
`lua_prelude()` turns the same templates into Lua functions (`K_job(job_id)`) prepended to every script, so no
Lua source spells a key name or builds one itself (a test scans them).
"""

from __future__ import annotations

import json
import string

PREFIX = "sdq:"
#: Monotonic counter; its values order the job indexes (unique even for jobs created in the same microsecond).
SEQUENCE = PREFIX + "seq"
#: Sorted set of every job id, scored by creation sequence.
INDEX_ALL = PREFIX + "jobs"
#: Per-status sorted sets are `INDEX_BY_STATUS + status`, same scores as `INDEX_ALL`.
INDEX_BY_STATUS = PREFIX + "jobs:"

#: The line (producer/line.py): the global index of queued jobs, scored by place in line (interactive jobs before
#: batch jobs, each in the order they entered the queue) rather than by creation, so ZRANK is a queue position.
LINE = INDEX_BY_STATUS + "queued"

JOB = PREFIX + "job:{job_id}"
JOBS_BY_STATUS = INDEX_BY_STATUS + "{status}"
TENANT_JOBS = PREFIX + "tenant:{tenant}:jobs"
TENANT_JOBS_BY_STATUS = TENANT_JOBS + ":{status}"
API_KEY = PREFIX + "apikey:{key_id}"
#: A counter, not a set of ids (an entry per queued job would cost ~150 bytes each; bench/scale.py). Renamed from
#: `:queued`, the sorted set it replaces.
KEY_QUEUED = API_KEY + ":queued_count"
#: What an `Idempotency-Key` of a tenant already produced on one route (`scope`: jobs, batches).
IDEMPOTENCY = PREFIX + "idem:{scope}:{tenant}:{key}"
BATCH = PREFIX + "batch:{batch_id}"
BATCH_JOBS = BATCH + ":jobs"
BATCH_DONE = BATCH + ":done"
TENANT_BATCHES = PREFIX + "tenant:{tenant}:batches"
#: When each finished job's record (and each finished batch) expires, for the sweep that takes it out of every
#: index then (lua/expire.lua): members `job <id> <status> <tenant>` and `batch <id> <tenant>`, scored by the
#: unix time their TTL ends. Without it, an expired id would leave an index only when someone listed its page.
EXPIRING = PREFIX + "expiring"
#: Set of the jobs canceled while queued whose message may still be on a queue (a worker drops it when it takes
#: it): the janitor's count check (`producer.msgref.line_deficit`) does not count those messages as carrying a
#: queued job. A claim of the job removes it (lua/claim.lua), the janitor prunes what is gone, and it expires a
#: job TTL after the last cancel.
STALE_MESSAGES = PREFIX + "line:stale"


def job(job_id: str) -> str:
    """Hash holding one job record (its fields: `producer.jobhash`)."""
    return JOB.format(job_id=job_id)


def index(status: str | None) -> str:
    """The index of all jobs, or of the jobs in one status."""
    return INDEX_ALL if status is None else JOBS_BY_STATUS.format(status=status)


# Tenants, API keys, quotas and batches.

#: Set of every API key id.
API_KEYS = PREFIX + "apikeys"


def api_key(key_id: str) -> str:
    """Hash holding one API key record (its token only as a SHA-256 digest)."""
    return API_KEY.format(key_id=key_id)


def rate(key_id: str) -> str:
    """The GCRA state (theoretical arrival time) of one key's request-rate limit."""
    return f"{PREFIX}rate:{key_id}"


def stream_slots(holder: str) -> str:
    """Sorted set of the event streams one holder (`key:<id>`, or `addr:<ip>` in open mode) has open, over every
    API process: stream id → the Redis time of its last heartbeat (producer/streamslots.py prunes stale ones)."""
    return f"{PREFIX}streams:{holder}"


def tenant_index(tenant: str, status: str | None) -> str:
    """The index of one tenant's jobs (all, or in one status), scored like `INDEX_ALL`."""
    if status:
        return TENANT_JOBS_BY_STATUS.format(tenant=tenant, status=status)
    return TENANT_JOBS.format(tenant=tenant)


def key_queued(key_id: str) -> str:
    """How many jobs submitted with one API key are queued (its quota counts these), kept by the scripts that move
    a job in the same step."""
    return KEY_QUEUED.format(key_id=key_id)


def idempotency(tenant: str, scope: str, key: str) -> str:
    """What an `Idempotency-Key` of a tenant already produced on one route (`scope`: jobs, batches)."""
    return IDEMPOTENCY.format(scope=scope, tenant=tenant, key=key)


def batch(batch_id: str) -> str:
    """Hash holding one batch: its fields and a counter per job status."""
    return BATCH.format(batch_id=batch_id)


def batch_jobs(batch_id: str) -> str:
    """List of a batch's job ids, in item order."""
    return BATCH_JOBS.format(batch_id=batch_id)


def batch_done(batch_id: str) -> str:
    """List of a batch's job ids in the order they finished: a feed clients follow by offset."""
    return BATCH_DONE.format(batch_id=batch_id)


def tenant_batches(tenant: str) -> str:
    """Sorted set of one tenant's batch ids, scored by creation time (the dashboard's batch list)."""
    return TENANT_BATCHES.format(tenant=tenant)


# Cost accounting (producer/cost.py).


def usage_day(day: str) -> str:
    """Hash of one UTC day's uptime, busy seconds and job count per instance type × capacity (`kind|type|cap`)."""
    return f"{PREFIX}usage:{day}"


def jobs_usage_day(day: str, tenant: str | None) -> str:
    """Hash of the busy seconds (`busy_s|type|cap`) and the number of jobs (`jobs`) of one tenant's jobs on one UTC
    day (None: every job), kept beside the day's ledger so a tenant's day is priced from one read."""
    return f"{PREFIX}usage:{day}:" + (f"tenant:{tenant}" if tenant is not None else "all")


# Webhooks (producer/webhooks).

#: Stream of the state changes of jobs with a webhook (started, succeeded, failed, canceled, batch.completed); the
#: `sdq webhooks` dispatcher reads it in a consumer group. Never capped: the dispatcher trims only entries its group
#: has acknowledged, so no terminal event is lost however long the dispatcher is down.
EVENTS = PREFIX + "events"
#: Stream of `job.progress` events: best effort in a lane of its own, capped (about `PROGRESS_EVENTS_MAXLEN`
#: entries), so a flood of progress never pushes a state change out.
PROGRESS_EVENTS = PREFIX + "events:progress"
PROGRESS_EVENTS_MAXLEN = 100_000


def delivery(msg_id: str) -> str:
    """Hash holding one webhook message: its target, body, state and attempt log."""
    return f"{PREFIX}wh:msg:{msg_id}"


def job_deliveries(job_id: str) -> str:
    """List of the webhook message ids of one job (or batch), in the order they were created."""
    return f"{PREFIX}wh:job:{job_id}"


def delivery_lock(msg_id: str) -> str:
    """Held while one attempt of a message is in flight (a redelivered queue message cannot send twice)."""
    return f"{PREFIX}wh:lock:{msg_id}"


def endpoint_in_flight(digest: str) -> str:
    """Sorted set of the attempts in flight to one endpoint (scheme, host, port), scored by when each slot lapses."""
    return f"{PREFIX}wh:inflight:{digest}"


def disabled_endpoint(digest: str) -> str:
    """Set when an endpoint answered 410 Gone: nothing more is sent to it (until an explicit redeliver)."""
    return f"{PREFIX}wh:disabled:{digest}"


def progress_sent(job_id: str) -> str:
    """When the last `job.progress` event of a job was sent (throttle)."""
    return f"{PREFIX}wh:progress:{job_id}"


def inbound_seen(msg_id: str) -> str:
    """An inbound webhook id already accepted (replay protection), holding the ids of the jobs it made."""
    return f"{PREFIX}hooks:seen:{msg_id}"


# Uploads (producer/inputs/uploads.py).


def upload(upload_id: str) -> str:
    """Hash holding one upload: its tenant, content type and byte limit; it expires with the upload id."""
    return f"{PREFIX}upload:{upload_id}"


#: List of the controller's recent samples (work remaining, workers, desired, capacity), newest first: the
#: dashboard's fleet chart (producer/controller/history.py keeps it trimmed).
FLEET_HISTORY = PREFIX + "fleet:history"


# What each worker holds (producer/holdings.py): reported on its heartbeat clock, expiring with it.

#: Sorted set of the worker ids that reported, scored by when their report expires.
WORKER_HOLDINGS = PREFIX + "workers:holdings"


def worker_holdings(worker_id: str) -> str:
    """Hash of what one worker holds: the models loaded on its device and those in its machine's model cache."""
    return f"{PREFIX}worker:{worker_id}:holdings"


# What each worker reports about itself (producer/worker_status.py): GPU figures and idle timers, for the fleet page.

#: Sorted set of the worker ids that reported a status, scored by when their report expires.
WORKER_STATUSES = PREFIX + "workers:status"
WORKER_STATUS = PREFIX + "worker:{worker_id}:status"


def worker_status(worker_id: str) -> str:
    """String (JSON) of one worker's last status report; it expires a few report intervals after it was written."""
    return WORKER_STATUS.format(worker_id=worker_id)


#: The keys Lua scripts reach that no caller can name in `KEYS` beforehand (they follow from the record's fields,
#: e.g. its tenant or batch), or that every script shares: Lua name → template.
LUA_KEYS = {
    "K_seq": SEQUENCE,
    "K_jobs": INDEX_ALL,
    "K_events": EVENTS,
    "K_progress_events": PROGRESS_EVENTS,
    "K_job": JOB,
    "K_index": JOBS_BY_STATUS,
    "K_tenant_jobs": TENANT_JOBS,
    "K_tenant_index": TENANT_JOBS_BY_STATUS,
    "K_api_key": API_KEY,
    "K_key_queued": KEY_QUEUED,
    "K_idempotency": IDEMPOTENCY,
    "K_batch": BATCH,
    "K_batch_jobs": BATCH_JOBS,
    "K_batch_done": BATCH_DONE,
    "K_tenant_batches": TENANT_BATCHES,
    "K_expiring": EXPIRING,
    "K_stale_messages": STALE_MESSAGES,
}


def lua_prelude() -> str:
    """Lua definitions of `LUA_KEYS`: a constant per fixed key, a function per template, e.g.
    `local function K_tenant_index(tenant, status) return "sdq:tenant:" .. tenant .. ":jobs:" .. status end`."""
    lines = []
    for name, template in LUA_KEYS.items():
        parts, params = [], []
        for literal, field, _, _ in string.Formatter().parse(template):
            if literal:
                parts.append(json.dumps(literal))
            if field:
                params.append(field)
                parts.append(field)
        if params:
            lines.append(f"local function {name}({', '.join(params)}) return {' .. '.join(parts)} end")
        else:
            lines.append(f"local {name} = {json.dumps(template)}")
    return "\n".join(lines) + "\n"


# Throughput (producer/eta.py): the rolling window ETAs come from.


def throughput(bucket: int) -> str:
    """Hash of what the fleet finished in one bucket of the throughput window (`eta.BUCKET_S` seconds each),
    expiring once the bucket leaves the window."""
    return f"{PREFIX}throughput:{bucket}"
