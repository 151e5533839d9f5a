"""One GPU executor per device: runs the jobs that worker threads submit, a cohort of compatible ones per call.

Dramatiq's worker threads each submit a job here and wait for its images. A preparing thread takes the next cohort
of compatible jobs from a `CohortQueue` and starts each one (its runner claims it then: its lease and time limit
start); a single executor thread owns the device and runs each prepared cohort in one pipeline call, then hands each
job its images. While the device is busy the next cohort keeps gathering company, and is claimed as soon as it is
full, so under load the claims (a Redis round trip and a lease each) happen while the previous cohort denoises, not
between two cohorts (measured on CPU: claiming 4 jobs in the gap cost 12 ms of every 430 ms cohort). A job whose
cohort is not complete stays `queued`, and cancels at once, until the device is free for it. Encoding and
uploading happen back in the job's own thread, so while the GPU denoises cohort k the threads of cohort k-1 encode
and upload.

Inside a cohort each job keeps its own step callback (progress, cancellation, lease, time limit). A job whose
callback raises is dropped from the cohort's results at once (its thread gets the exception and settles the job),
but its images keep being computed, since a diffusers call cannot shed one sample mid-run; the call stops early
only once every job in it has stopped. CUDA out-of-memory splits the cohort in halves and retries each; a single
job that still does not fit fails with `out_of_memory`; the split runs only after the handler is left and memory is
collected (the traceback's frames would keep the failed call's tensors alive), and the shape's cap drops so later
cohorts of it form small enough to fit (`gpu_worker.cohort_caps`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

from producer.jobs import JobRequest

from .checkpoint import CheckpointError
from .cohort_caps import CohortCaps
from .cohorts import INTERACTIVE_PRIORITY, CohortJob, CohortQueue, JobResult
from .conditioning import PreparedInputs
from .device import Device, Session
from .device.local import LocalDevice
from .errors import JobInterruptedError, JobTimeoutError, OutOfMemoryError, TransientError
from .inference import StepCallback
from .metrics import WorkerMetrics
from .models import LoadedModels, release_memory

log = logging.getLogger(__name__)


class _CohortStopped(Exception):
    """Every job in the running cohort has stopped: abandon the pipeline call."""


class GpuExecutor:
    """Runs submitted jobs on one device, `max_images` images per pipeline call at most.

    `device` is a `gpu_worker.device.Device` (a `LoadedModels` is used in this process, on the executor's thread);
    the executor does not close it. `pipeline_calls` counts the calls made (cohorts run, including retried halves
    after out-of-memory).
    """

    def __init__(
        self,
        device: Device | LoadedModels,
        *,
        max_images: int = 4,
        wait_ms: float = 5.0,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.device: Device = LocalDevice(device) if isinstance(device, LoadedModels) else device
        self.metrics = metrics or WorkerMetrics()
        #: Images per call that fit, per (model, size), lowered by out-of-memory errors.
        self.caps = CohortCaps(max_images)
        self.queue = CohortQueue(max_images=max_images, wait_s=wait_ms / 1000, limit=self.caps.limit)
        self.pipeline_calls = 0
        self._thread = threading.Thread(target=self._loop, name="gpu-executor", daemon=True)
        self._preparer = threading.Thread(target=self._prepare_loop, name="gpu-cohort-prep", daemon=True)
        self._stopping = threading.Event()
        # The next cohort, its jobs claimed: at most one waits here while the executor runs another.
        self._prepared: list[CohortJob] | None = None
        self._slot = threading.Condition()
        self._running = False  # a cohort is on the device

    def start(self) -> GpuExecutor:
        """Start the executor and preparing threads."""
        self._thread.start()
        self._preparer.start()
        return self

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop after the running cohort; jobs not yet run get a `TransientError` (their runner hands them back)."""
        self._stopping.set()
        for job in self.queue.close():
            job.future.set_exception(TransientError("the worker shut down before the job ran"))
        with self._slot:
            self._slot.notify_all()
        for thread in (self._preparer, self._thread):
            if thread.is_alive():
                thread.join(timeout_s)
        with self._slot:
            prepared, self._prepared = self._prepared, None
        _fail(prepared or [], TransientError("the worker shut down before the job ran"))

    def __enter__(self) -> GpuExecutor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def submit(
        self,
        job_id: str,
        request: JobRequest,
        on_step: StepCallback,
        *,
        resume: Any = None,
        start: Callable[[], None] | None = None,
        created: float | None = None,
        priority: int = INTERACTIVE_PRIORITY,
        inputs: PreparedInputs | None = None,
    ) -> CohortJob:
        """Queue a job; its `future` resolves to a `JobResult` or to the exception that stopped it.

        `resume` (a `gpu_worker.checkpoint.Snapshot`) continues a handed-off job from its checkpoint; such a job
        runs alone. A `JobInterruptedError` from `on_step` gets the job's snapshot filled in. `inputs` are the
        job's image inputs (it shares a cohort only with jobs of the same `InputSpec`).
        """
        job = CohortJob(job_id, request, on_step, resume=resume, start=start, priority=priority, inputs=inputs)
        if created is not None:  # the job's creation time (`time.time()`): older jobs start first
            job.created = created
        self.queue.put(job)
        return job

    def run(
        self,
        job_id: str,
        request: JobRequest,
        on_step: StepCallback,
        *,
        timeout_s: float,
        resume: Any = None,
        start: Callable[[], None] | None = None,
        created: float | None = None,
        priority: int = INTERACTIVE_PRIORITY,
        inputs: PreparedInputs | None = None,
    ) -> JobResult:
        """Submit a job and wait for its result; raises what stopped it, or `JobTimeoutError` after `timeout_s`."""
        job = self.submit(
            job_id, request, on_step, resume=resume, start=start, created=created, priority=priority, inputs=inputs
        )
        try:
            return job.future.result(timeout=timeout_s)
        except FutureTimeoutError:
            # The job's own callback fails it at its next step (its deadline has passed); nobody waits any more.
            raise JobTimeoutError(f"no result after {timeout_s:g} s") from None

    def _prepare_loop(self) -> None:
        while not self._stopping.is_set():
            with self._slot:
                if not self._slot.wait_for(lambda: self._prepared is None or self._stopping.is_set(), timeout=0.5):
                    continue
            # While a cohort runs the next one keeps gathering company (up to a full cohort): it cannot start sooner.
            cohort = self.queue.take(timeout_s=0.5, busy=lambda: self._running)
            live = [job for job in cohort if _still_wanted(job)]
            if live:
                with self._slot:
                    self._prepared = live
                    self._slot.notify_all()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._slot:
                self._slot.wait_for(lambda: self._prepared is not None or self._stopping.is_set(), timeout=0.5)
                if self._stopping.is_set():
                    return  # a prepared cohort is failed by `shutdown`
                cohort, self._prepared = self._prepared, None
                self._running = cohort is not None
                self._slot.notify_all()  # the preparer forms and claims the next cohort while this one runs
            if cohort:
                try:
                    self._run(cohort)
                except BaseException as exc:  # never leave a waiting thread hanging, never kill the executor
                    log.exception("cohort of %d job(s) failed", len(cohort))
                    _fail(cohort, exc)
                finally:
                    self._running = False
                    self.queue.poke()  # a cohort still gathering company stops waiting for it now

    def _run(self, cohort: list[CohortJob]) -> None:
        live = [job for job in cohort if _still_wanted(job)]  # again: one canceled while it waited here leaves now
        if not live:
            return
        model = live[0].request.model
        assert model is not None  # JobMessage guarantees a resolved model
        try:
            # The cohort key includes the LoRA set, so the whole cohort shares the first job's adapters.
            with self.device.session(model, loras=live[0].request.loras) as (session, load_s):
                # A cohort formed before its shape's cap dropped runs in calls that fit the cap now.
                for chunk in _chunks(live, self.caps.limit(live[0].request)):
                    self._render(session, chunk, load_s)
        except Exception as exc:  # the model did not load: every job of the cohort fails with the same error
            _fail(live, exc)

    def _render(self, session: Session, jobs: Sequence[CohortJob], load_s: float) -> None:
        stopped: dict[CohortJob, BaseException] = {}
        rows, first_row = {}, 0
        for job in jobs:
            rows[job] = slice(first_row, first_row + job.request.num_images)
            first_row += job.request.num_images

        def on_step(done: int, total: int) -> None:
            for job in jobs:
                if job in stopped:
                    continue
                try:
                    job.on_step(done, total)
                except Exception as exc:
                    if isinstance(exc, JobInterruptedError) and exc.snapshot is None and done > 0:
                        try:
                            exc.snapshot = session.capture(rows[job])
                        except CheckpointError as capture_exc:  # hand off without one: it restarts
                            log.warning("job %s: no checkpoint: %s", job.job_id, capture_exc)
                    stopped[job] = exc
                    job.future.set_exception(exc)  # its thread settles the job now, not at the end of the cohort
            if len(stopped) == len(jobs):
                raise _CohortStopped

        images = sum(job.request.num_images for job in jobs)
        self.pipeline_calls += 1  # counted as the call starts: a stopped job's thread may look before it returns
        started_at, started = time.time(), time.perf_counter()
        try:
            # Checkpoint/resume (spot hand-offs): a resumed job always runs alone (see CohortJob.resume).
            results, warnings = session.generate(
                [job.request for job in jobs],
                on_step,
                resume=jobs[0].resume if len(jobs) == 1 else None,
                inputs=[job.inputs for job in jobs] if any(job.inputs for job in jobs) else (),
            )
        except _CohortStopped:
            return
        except OutOfMemoryError as exc:
            # Only the message leaves the handler: the traceback's frames hold the failed call's tensors.
            failure: OutOfMemoryError | None = OutOfMemoryError(str(exc))
        else:
            failure = None
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.record_cohort(images=images, jobs=len(jobs), seconds=elapsed)
        if failure is not None:
            self._split_after_out_of_memory(session, jobs, stopped, failure, load_s)
            return
        self.caps.fitted(jobs[0].request, images)
        for job, job_images, warning in zip(jobs, results, warnings, strict=True):
            if job not in stopped:
                job.future.set_result(
                    JobResult(job_images, [warning] if warning else [], load_s, elapsed, images, started_at=started_at)
                )

    def _split_after_out_of_memory(
        self,
        session: Session,
        jobs: Sequence[CohortJob],
        stopped: dict[CohortJob, BaseException],
        failure: OutOfMemoryError,
        load_s: float,
    ) -> None:
        """Out of memory with `jobs`: lower their shape's cap, free what the failed call held, retry in halves."""
        images = sum(job.request.num_images for job in jobs)
        cap = self.caps.out_of_memory(jobs[0].request, images)
        release_memory()  # in this process; the device process frees its own before it answers (inference._call)
        remaining = [job for job in jobs if job not in stopped]
        if len(remaining) <= 1:
            _fail(remaining, failure)
            return
        log.warning("out of memory with %d image(s) in one call; retrying in halves (this size now %d)", images, cap)
        half = len(remaining) // 2
        self._render(session, remaining[:half], load_s)
        self._render(session, remaining[half:], load_s)


def _chunks(jobs: list[CohortJob], most_images: int) -> list[list[CohortJob]]:
    """`jobs` in order, in runs of at most `most_images` images (a job asking for more runs alone)."""
    chunks: list[list[CohortJob]] = []
    images = 0
    for job in jobs:
        if not chunks or images + job.request.num_images > most_images:
            chunks.append([])
            images = 0
        chunks[-1].append(job)
        images += job.request.num_images
    return chunks


def _still_wanted(job: CohortJob) -> bool:
    """Start the job (its runner claims it, once) and ask its callback (step 0) whether it still runs."""
    try:
        if job.start is not None:
            job.start()
        job.on_step(0, job.request.steps)
    except Exception as exc:
        job.future.set_exception(exc)
        return False
    return True


def _fail(jobs: Sequence[CohortJob], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)
