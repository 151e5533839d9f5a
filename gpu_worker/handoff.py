"""The spot side of running a job: resume from a checkpoint, decide finish-or-checkpoint, hand the job off.

On a spot notice (`Interruption`), a job in flight checks at every denoising step whether its remaining steps, at
its measured step time, end `spot_margin_s` before the machine is reclaimed. If they do it finishes; if not, the
step callback raises `JobInterruptedError`, the executor snapshots the job's state (`gpu_worker.checkpoint`), and
`Handoff.hand_off` writes it to object storage, moves the job back to `queued` with a pointer to it (one fenced
transition: this attempt can no longer settle), and re-sends its message. The next worker resumes at that step.
A hand-off does not use up one of the job's attempts (`handoffs` is subtracted in claim.lua).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from producer.jobs import CheckpointRef, JobMessage, JobStatus
from producer.store import JobStore
from storage import ObjectNotFoundError, ObjectStore, StorageError

from .checkpoint import CheckpointError, Snapshot, checkpoint_key, decode_snapshot, encode_snapshot
from .errors import JobInterruptedError
from .notices import Interruption

log = logging.getLogger(__name__)


@dataclass
class StepClock:
    """Measures one job's denoising step time (a moving average over real steps, replays excluded)."""

    seconds_per_step: float | None = None
    _last: float | None = field(default=None, repr=False)

    def tick(self) -> None:
        now = time.monotonic()
        if self._last is not None:
            elapsed = now - self._last
            self.seconds_per_step = (
                elapsed if self.seconds_per_step is None else 0.7 * self.seconds_per_step + 0.3 * elapsed
            )
        self._last = now


class Handoff:
    """Checkpoint storage and the finish-or-checkpoint rule for one worker's jobs."""

    def __init__(
        self,
        store: JobStore,
        checkpoints: ObjectStore,
        resend: Callable[[JobMessage, float], None],
        interruption: Interruption | None,
        *,
        margin_s: float,
    ) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self.resend = resend
        self.interruption = interruption
        self.margin_s = margin_s

    def load(self, job_id: str, pointer: CheckpointRef | None) -> Snapshot | None:
        """The snapshot `pointer` names, or None (no pointer, or unreadable: the job then starts from step 0)."""
        if pointer is None:
            return None
        try:
            snapshot = decode_snapshot(self.checkpoints.get(pointer.key))
        except (CheckpointError, ObjectNotFoundError) as exc:
            log.warning("job %s: cannot resume from %s (%s); starting from step 0", job_id, pointer.key, exc)
            return None
        log.info("job %s: resuming at step %d of %d from %s", job_id, snapshot.step, snapshot.total, pointer.key)
        return snapshot

    def check(self, clock: StepClock, step: int, total: int) -> None:
        """Called at every step: raises `JobInterruptedError` when a notice leaves too little time to finish."""
        if step > 0:  # step 0 is the check before the job starts (its interval would include model loading)
            clock.tick()
        if self.interruption is None or not self.interruption.is_set():
            return
        left = self.interruption.seconds_left()
        if left is None:  # no deadline (a rebalance recommendation): finish
            return
        if clock.seconds_per_step is None:  # not started, or speed not measured yet: do not bet on it
            raise JobInterruptedError(f"spot notice at step {step} of {total}: {left:.1f} s left")
        needed = (total - step) * clock.seconds_per_step + self.margin_s
        if needed > left:
            raise JobInterruptedError(
                f"spot notice: {total - step} step(s) need ~{needed:.1f} s with margin, {left:.1f} s left"
            )

    def hand_off(
        self,
        message: JobMessage,
        attempt: int,
        snapshot: object | None,
        *,
        previous: CheckpointRef | None,
        handoffs: int,
    ) -> bool:
        """Store `snapshot`, requeue the job with a pointer to it (fenced by `attempt`) and re-send its message.

        Without a snapshot (no step ran yet) the job keeps its previous checkpoint, if any. Returns False when this
        attempt had already lost the job (nothing is changed then).
        """
        job_id = message.job_id
        pointer = previous
        if isinstance(snapshot, Snapshot):
            pointer = CheckpointRef(key=checkpoint_key(job_id, attempt), step=snapshot.step, attempt=attempt)
            try:
                self.checkpoints.put(pointer.key, encode_snapshot(snapshot), content_type="application/octet-stream")
            except StorageError as exc:  # hand it off anyway: restarting from the last pointer beats waiting here
                log.warning("job %s: checkpoint upload failed (%s); handing off without it", job_id, exc)
                pointer = previous
        fields: dict[str, str] = {"worker": "", "handoffs": str(handoffs + 1)}
        if pointer is not None:
            fields["checkpoint"] = pointer.model_dump_json()
        if not self.store.settle(job_id, attempt, JobStatus.QUEUED, **fields):
            log.warning("job %s attempt %d: lost the job before the hand-off", job_id, attempt)
            if pointer is not None and not _same(pointer, previous):
                self.discard(pointer)
            return False
        self.resend(message.model_copy(update={"checkpoint": pointer}), 0.0)
        if previous is not None and not _same(pointer, previous):
            self.discard(previous)
        log.info(
            "job %s attempt %d handed off at step %s (%s)",
            job_id,
            attempt,
            pointer.step if pointer else 0,
            pointer.key if pointer else "no checkpoint",
        )
        return True

    def discard(self, pointer: CheckpointRef | None) -> None:
        """Delete a checkpoint nobody needs any more (the job ended, or a newer one replaced it)."""
        if pointer is None:
            return
        try:
            self.checkpoints.delete(pointer.key)
        except StorageError as exc:  # a leftover is harmless: the bucket's lifecycle rule removes it
            log.warning("could not delete checkpoint %s: %s", pointer.key, exc)


def _same(a: CheckpointRef | None, b: CheckpointRef | None) -> bool:
    return a is not None and b is not None and a.key == b.key
