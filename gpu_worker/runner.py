"""Running one job: claim it, have the GPU executor denoise it (with progress and cancellation), encode, upload,
settle. Runs in one of Dramatiq's worker threads; the executor may run it in one cohort with other threads' jobs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import ValidationError

from producer.errors import JobNotFoundError
from producer.eta import record_finish
from producer.inputs.resolve import InputSources
from producer.jobs import (
    CheckpointRef,
    ErrorCode,
    JobMessage,
    JobRecord,
    JobRequest,
    JobStatus,
    Output,
    Progress,
    Timings,
    is_job_id,
)
from producer.outcomes import ClaimOutcome
from producer.store import Claim, JobStore
from storage import NotSupportedError, ObjectStore, StorageError

from .checkpoint import CheckpointError
from .cohorts import BATCH_SUBMISSION_PRIORITY, INTERACTIVE_PRIORITY, cohorts_per_message
from .conditioning import PreparedInputs
from .encode import encode_image
from .errors import (
    InvalidInputError,
    JobCanceledError,
    JobInterruptedError,
    JobTimeoutError,
    LeaseLostError,
    TransientError,
    WorkerError,
)
from .executor import GpuExecutor
from .handoff import Handoff, StepClock
from .job_inputs import prepare_inputs
from .lease import Lease
from .notices import Interruption
from .outputs import AttemptOutputs
from .progress import ProgressPump
from .settings import WorkerSettings

log = logging.getLogger(__name__)

#: Re-sends a job message after a delay (used when another attempt still holds the job's lease).
Resend = Callable[[JobMessage, float], None]


class _NotStarted(Exception):
    """The claim did not give this worker the job (it ended, was canceled, or runs elsewhere)."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(claim.outcome)
        self.claim = claim


@dataclass
class _Run:
    message: JobMessage
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Set when the executor starts the job (see `JobRunner._start`): until then it is not claimed, and `queued`.
    attempt: int = 0
    lease: Lease | None = None
    started: float = 0.0
    batch_size: int | None = None
    #: (family, dtype) of the pipeline that rendered the job's images, for its record.
    rendered: tuple[str, str] | None = None
    # Spot hand-offs: the checkpoint this attempt resumed from, earlier hand-offs, and the measured step time.
    resume_from: CheckpointRef | None = None
    handoffs: int = 0
    clock: StepClock = field(default_factory=StepClock)
    #: The images this attempt wrote: deleted again when it does not settle them onto the record.
    outputs: AttemptOutputs | None = None

    @property
    def request(self) -> JobRequest:
        """The job's resolved request: the message's, or the record's (filled in as the attempt begins)."""
        assert self.message.request is not None
        return self.message.request


class JobRunner:
    """Executes job messages. Every failure ends in a recorded status; only transient ones are retried."""

    def __init__(
        self,
        settings: WorkerSettings,
        store: JobStore,
        objects: ObjectStore,
        executor: GpuExecutor,
        resend: Resend,
        *,
        interruption: Interruption | None = None,
        checkpoints: ObjectStore | None = None,
        input_sources: InputSources | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.objects = objects
        self.executor = executor
        self.metrics = executor.metrics
        self.resend = resend
        # On a spot notice (`interruption` set by the SpotWatcher) jobs finish or hand off with a checkpoint.
        self.handoff = Handoff(store, checkpoints or objects, resend, interruption, margin_s=settings.spot_margin_s)
        # Progress goes to Redis from its own thread: the executor's step callbacks never wait on a round trip.
        self.progress = ProgressPump(settings.progress_interval_s)
        # Input images are resolved from the job storage (uploads, and `inputs/<job>/` once resolved).
        self.input_sources = input_sources or InputSources(
            objects, limits=settings.input_limits(), url_policy=settings.input_url_policy()
        )

    def run(self, payload: Any) -> None:
        """Run the job in `payload` (a `JobMessage` as JSON data); raises `TransientError` to ask for a retry."""
        try:
            message = JobMessage.model_validate(payload)
        except ValidationError as exc:
            self._reject(payload, exc)
            return
        run = _Run(message)
        try:
            self._attempt(run)
        finally:
            if run.lease is not None:
                self.progress.discard(run.lease)
                run.lease.__exit__(None, None, None)

    def _start(self, run: _Run) -> Callable[[], None]:
        """Claim the job, as the executor forms its batch: until then the job stays `queued` in its record, so a
        cancel takes effect at once and queue positions stay true. Idempotent; raises `_NotStarted`."""

        def start() -> None:
            if run.lease is not None:
                return
            claim = self.store.claim(
                run.message.job_id,
                worker=self.settings.worker_id,
                lease_s=self.settings.lease_s,
                max_attempts=self.settings.max_attempts,
            )
            if claim.outcome is not ClaimOutcome.CLAIMED:
                raise _NotStarted(claim)
            run.attempt, run.started = claim.attempt, time.monotonic()
            run.lease = Lease(self.store, run.message.job_id, claim.attempt, lease_s=self.settings.lease_s).__enter__()

        return start

    def _not_started(self, run: _Run, exc: BaseException) -> None:
        """The job never started here: nothing was recorded on it, so the message decides what happens next."""
        message = run.message
        if isinstance(exc, _NotStarted):
            # A live attempt elsewhere: look again once its lease could have lapsed.
            if exc.claim.outcome is ClaimOutcome.BUSY:
                self.resend(message, exc.claim.retry_after_s + 1.0)
            else:
                log.info("job %s: nothing to run (%s)", message.job_id, exc.claim.status)
            return
        if isinstance(exc, JobNotFoundError):
            log.info("job %s: no record (expired or discarded); nothing to run", message.job_id)
            return
        # Redis down before the claim, the executor shutting down, or stuck: hand the message back unrun.
        log.warning("job %s did not start here, handing it back: %s", message.job_id, exc)
        raise TransientError(f"did not start: {exc}") from exc

    def _attempt(self, run: _Run) -> None:
        try:
            outputs = self._execute(run)
        except Exception as exc:
            if run.lease is None:
                self._not_started(run, exc)
            else:
                self._discard_outputs(run)  # a part-uploaded attempt that failed: its objects are on no record
                self._settle_failure(run, exc)
        else:
            self._succeed(run, outputs)

    def _discard_outputs(self, run: _Run) -> None:
        if run.outputs is not None:
            run.outputs.discard()

    def _settle_failure(self, run: _Run, failure: Exception) -> None:
        job_id, attempt = run.message.job_id, run.attempt
        try:
            raise failure
        except LeaseLostError:
            log.warning("job %s attempt %d lost its lease; another attempt owns it", job_id, attempt)
        except JobInterruptedError as exc:
            self.handoff.hand_off(run.message, attempt, exc.snapshot, previous=run.resume_from, handoffs=run.handoffs)
        except JobCanceledError:
            if not self.store.settle(job_id, attempt, JobStatus.CANCELED, timings=self._timings(run)):
                self._lost(run, "cancel")
                return
            self.handoff.discard(run.resume_from)
            self.metrics.record_job(JobStatus.CANCELED, self._timings(run))
        except (StorageError, redis.RedisError, TransientError) as exc:
            if _is_permanent(exc):
                self._fail(run, ErrorCode.STORAGE, f"cannot write outputs: {exc}")
                return
            if attempt >= self.settings.max_attempts:  # named for what failed: storage, or anything else transient
                code = ErrorCode.STORAGE if isinstance(exc, StorageError) else ErrorCode.INTERNAL
                self._fail(run, code, f"gave up after {attempt} attempts: {exc}")
                return
            log.warning("job %s attempt %d hit a transient error, handing it back: %s", job_id, attempt, exc)
            if not self.store.settle(job_id, attempt, JobStatus.QUEUED, worker=""):
                self._lost(run, "retry")  # another attempt owns the job: no second message for it
                return
            raise TransientError(str(exc)) from exc
        except WorkerError as exc:
            self._fail(run, exc.error_code, str(exc))
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._fail(run, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _succeed(self, run: _Run, outputs: list[Output]) -> None:
        job_id, attempt = run.message.job_id, run.attempt
        timings = self._timings(run)
        family, dtype = run.rendered or (None, None)
        settled = self.store.settle(
            job_id,
            attempt,
            JobStatus.SUCCEEDED,
            outputs=outputs,
            timings=timings,
            warnings=run.warnings,
            family=family,
            dtype=dtype,
        )
        if not settled:  # fenced off: the winner's images are the job's; this attempt's go
            self._discard_outputs(run)
            self._lost(run, "success")
            return
        if run.outputs is not None:
            run.outputs.keep()  # on the record now
        self.metrics.record_job(JobStatus.SUCCEEDED, timings, images=len(outputs))
        self.handoff.discard(run.resume_from)
        try:  # the fleet's throughput, which ETAs come from (a lost figure never fails a job)
            record_finish(self.store.client, run.request, time.monotonic() - run.started, images=len(outputs))
        except redis.RedisError as exc:
            log.warning("job %s: cannot record its run time for ETAs: %s", job_id, exc)
        log.info(
            "job %s succeeded: %d image(s), attempt %d, %s",
            job_id,
            len(outputs),
            attempt,
            " ".join(f"{name}={value:.3f}" for name, value in timings.model_dump(exclude_none=True).items()),
        )

    def _execute(self, run: _Run) -> list[Output]:
        job_id = run.message.job_id
        record = self.store.get(job_id)
        if run.message.request is None:  # the usual message carries only the id: the record holds the request
            run.message = run.message.model_copy(update={"request": record.request})
        request = run.request
        assert request.seed is not None  # the service records and sends only resolved requests
        run.warnings.extend(record.warnings)
        run.resume_from, run.handoffs = record.checkpoint, record.handoffs
        resume = self.handoff.load(job_id, record.checkpoint)
        inputs = self._prepare_inputs(run, never_claimed=record.attempts == 0)  # once: every call of the attempt
        # The GPU runs the job, possibly in one cohort with others, and claims it as its cohort forms; this thread
        # waits, then encodes and uploads while the GPU moves on to the next cohort. The wait's limit is only a
        # backstop (the step callback enforces the time limit): the cohorts ahead of it and its own each stop then.
        cohorts = cohorts_per_message(self.settings.worker_threads, self.settings.batch_max)
        timeout_s = cohorts * self.settings.job_timeout_s + 30.0
        on_step = self._on_step(run)
        try:
            result = self.executor.run(
                job_id,
                request,
                on_step,
                timeout_s=timeout_s,
                resume=resume,
                start=self._start(run),
                created=record.created_at.timestamp(),
                priority=_priority(record),
                inputs=inputs,
            )
        except CheckpointError as exc:  # the checkpoint does not fit this run: start over rather than fail
            log.warning("job %s: checkpoint unusable (%s); starting from step 0", job_id, exc)
            result = self.executor.run(
                job_id,
                request,
                on_step,
                timeout_s=timeout_s,
                start=self._start(run),
                created=record.created_at.timestamp(),
                priority=_priority(record),
                inputs=inputs,
            )
        run.timings["queue_wait_s"] = max(0.0, result.started_at - record.created_at.timestamp())
        run.timings["load_s"] = result.load_s
        run.timings["inference_s"] = result.inference_s
        run.batch_size = result.cohort_size
        assert run.lease is not None  # a result means the executor started (claimed) the job
        self.progress.flush(run.lease)  # the final step's progress, recorded before the job settles
        run.warnings.extend(result.warnings)
        images = result.images

        started = time.perf_counter()
        encoded = [encode_image(image, request.output_format) for image in images]
        run.timings["encode_s"] = time.perf_counter() - started

        started = time.perf_counter()
        run.outputs = AttemptOutputs(self.objects, job_id, run.attempt)
        outputs = run.outputs.upload(request, images, encoded, run.lease.lost)
        run.rendered = run.outputs.rendered
        run.timings["upload_s"] = time.perf_counter() - started
        return outputs

    def _prepare_inputs(self, run: _Run, *, never_claimed: bool) -> PreparedInputs | None:
        """The job's image inputs: from their origin on its first attempt (`never_claimed`: no stored copy looked
        for but an https URL's), from `inputs/<job>/` after; an unusable image claims the job (`invalid_input`)."""
        job_id = run.message.job_id
        try:
            prepared = prepare_inputs(job_id, run.request, self.input_sources, never_claimed=never_claimed)
        except InvalidInputError:
            self._start(run)()
            raise
        if prepared is None:
            return None
        return prepared.inputs

    def _on_step(self, run: _Run) -> Callable[[int, int], None]:
        def on_step(step: int, total: int) -> None:
            lease = run.lease
            assert lease is not None  # the executor starts (claims) a job before its first step
            now = time.monotonic()
            self.progress.update(lease, Progress(step=step, total=total))  # sent by the pump; flags come back
            if lease.lost.is_set():
                raise LeaseLostError(run.message.job_id)
            if lease.cancel.is_set():
                raise JobCanceledError(f"canceled at step {step} of {total}")
            if now > run.started + self.settings.job_timeout_s:  # the time limit runs from the claim
                raise JobTimeoutError(f"still denoising after {self.settings.job_timeout_s:g} s (step {step}/{total})")
            self.handoff.check(run.clock, step, total)

        return on_step

    def _fail(self, run: _Run, code: ErrorCode, message: str) -> None:
        log.warning("job %s failed (%s): %s", run.message.job_id, code.value, message)
        settled = self.store.settle(
            run.message.job_id,
            run.attempt,
            JobStatus.FAILED,
            error={"code": code.value, "message": message},
            timings=self._timings(run),
        )
        if not settled:
            self._lost(run, "failure")
            return
        self.handoff.discard(run.resume_from)
        self.metrics.record_job(JobStatus.FAILED, self._timings(run))

    def _lost(self, run: _Run, what: str) -> None:
        """Fenced off (another attempt owns the job, or it ended): change nothing, keep its checkpoint."""
        log.warning(
            "job %s attempt %d lost the job before recording its %s; the attempt that holds it decides",
            run.message.job_id,
            run.attempt,
            what,
        )

    @staticmethod
    def _timings(run: _Run) -> Timings:
        return Timings(**run.timings, batch_size=run.batch_size)

    def _reject(self, payload: Any, exc: ValidationError) -> None:
        """A message this worker refuses: fail its job (if it names one) with `invalid_input`, never retry."""
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        log.error("rejecting invalid job message %r: %s", job_id, exc)
        if not isinstance(job_id, str) or not is_job_id(job_id):
            return
        claim = self.store.claim(job_id, worker=self.settings.worker_id, lease_s=self.settings.lease_s, max_attempts=99)
        if claim.outcome is ClaimOutcome.CLAIMED:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            self.store.settle(
                job_id, claim.attempt, JobStatus.FAILED, error={"code": "invalid_input", "message": detail}
            )


def _is_permanent(exc: BaseException) -> bool:
    """Storage errors that retrying cannot fix: bad keys or metadata, bad configuration, missing permissions."""
    return isinstance(exc, (ValueError, PermissionError, NotSupportedError))


def _priority(record: JobRecord) -> int:
    # Interactive jobs overtake those of submitted batches in the executor as they do in the worker's message order.
    return BATCH_SUBMISSION_PRIORITY if record.batch_id else INTERACTIVE_PRIORITY
