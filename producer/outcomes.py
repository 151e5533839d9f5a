"""What a fenced transition of the job store tells its caller: claim, touch (lease renewal), settle and reap.

Each outcome is an enum of the words its Lua script answers (lua/claim.lua, touch.lua, settle.lua, reap.lua).
"""

from __future__ import annotations

from dataclasses import dataclass

from .jobs.enums import TextEnum


class ClaimOutcome(TextEnum):
    """A worker's attempt to take a job."""

    CLAIMED = "claimed"  #: run it; `Claim.attempt` is the fencing token for every later write
    BUSY = "busy"  #: another live attempt holds the lease; try again after `Claim.retry_after_s`
    SKIP = "skip"  #: nothing to run (terminal, canceled, or the record is gone): `Claim.status` says which


@dataclass(frozen=True)
class Claim:
    """Outcome of a worker's attempt to take a job (see lua/claim.lua)."""

    outcome: ClaimOutcome
    attempt: int = 0
    retry_after_s: float = 0.0
    status: str = ""


class TouchOutcome(TextEnum):
    """A lease renewal."""

    HELD = "held"  #: the attempt still holds the job
    CANCEL_REQUESTED = "cancel_requested"  #: it still holds it, and a client asked it to stop
    LOST = "lost"  #: another attempt took over, or the job ended


@dataclass(frozen=True)
class Touch:
    """Outcome of a lease renewal: whether the attempt still holds the job, and whether to stop."""

    outcome: TouchOutcome

    @property
    def held(self) -> bool:
        """The attempt still holds the job."""
        return self.outcome is not TouchOutcome.LOST

    @property
    def cancel_requested(self) -> bool:
        """A client asked the running attempt to stop."""
        return self.outcome is TouchOutcome.CANCEL_REQUESTED


class SettleOutcome(TextEnum):
    """The end of an attempt. Truthy when it settled, so `if store.settle(...)` reads as it always did."""

    SETTLED = "ok"
    LOST = "lost"  #: fenced off: another attempt holds the job, or it already ended

    def __bool__(self) -> bool:
        return self is SettleOutcome.SETTLED


class ReapOutcome(TextEnum):
    """The janitor ending an expired attempt."""

    REQUEUED = "requeued"
    FAILED = "failed"
    CANCELED = "canceled"  #: a cancel was requested while the attempt ran: it wins over a requeue
    HELD = "held"  #: the lease is still live
    LOST = "lost"  #: the attempt no longer holds the job


@dataclass(frozen=True)
class Reap:
    """Outcome of the janitor ending an expired attempt (see lua/reap.lua)."""

    outcome: ReapOutcome
    detail: str = ""
