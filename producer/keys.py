"""Every Redis key sdqueue writes, in one place. (Dramatiq's own keys live under `dramatiq:`.)"""

from __future__ import annotations

PREFIX = "sdq:"
#: Monotonic counter; its values order the job indexes (unique even for jobs created in the same microsecond).
SEQUENCE = PREFIX + "seq"
#: Sorted set of every job id, scored by creation sequence.
INDEX_ALL = PREFIX + "jobs"
#: Per-status sorted sets are `INDEX_BY_STATUS + status`, same scores as `INDEX_ALL`.
INDEX_BY_STATUS = PREFIX + "jobs:"


def job(job_id: str) -> str:
    """Hash holding one job record."""
    return f"{PREFIX}job:{job_id}"


def index(status: str | None) -> str:
    """The index of all jobs, or of the jobs in one status."""
    return INDEX_ALL if status is None else INDEX_BY_STATUS + status
