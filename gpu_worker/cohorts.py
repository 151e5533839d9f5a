"""Which jobs may share a pipeline call, and the queue that gathers them into cohorts.

A *cohort* is the compatible jobs the GPU executor renders in one pipeline call (a submitted batch, `POST
/v1/batches`, is something else: its jobs come to the executor one by one, and each may share a cohort with any
compatible job). Every image in a cohort shares the model, size, steps, scheduler, guidance and any other
parameter of the request except the per-image ones (prompt, negative prompt, seed, image count) and those that
only matter after denoising (output format, webhook, metadata). The key is built from the request's fields minus
those, so a parameter added to `JobRequest` later (a LoRA set, say) keeps jobs apart until it is listed here.

Image inputs enter the key through their `gpu_worker.conditioning.InputSpec` (mode, strength, ControlNet models,
scales and windows, IP-Adapter model and scale), never through the images themselves, which are per job: jobs
that restyle different photos at the same strength share a call.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from producer.jobs import JobRequest

from .conditioning import InputSpec, PreparedInputs, spec_of
from .inference import StepCallback

#: Executor ranks (lower goes first), mirroring the worker's message priorities: a job of a submitted batch
#: (`POST /v1/batches`) waits for the interactive ones.
INTERACTIVE_PRIORITY = 0
BATCH_SUBMISSION_PRIORITY = 1

#: Request fields that may differ between the jobs of one cohort.
PER_JOB_FIELDS = frozenset(
    {"prompt", "negative_prompt", "seed", "num_images", "output_format", "webhook_url", "metadata"}
)
#: Request fields of image inputs: in the key only through the request's `InputSpec`.
INPUT_FIELDS = frozenset({"image", "strength", "mask_image", "controlnets", "ip_adapter"})


def cohorts_per_message(worker_threads: int, batch_max: int) -> int:
    """Pipeline calls a job may wait through in its worker: those of the other threads' jobs, then its own."""
    return 1 + -(-worker_threads // batch_max)


def cohort_key(request: JobRequest, spec: InputSpec | None = None) -> str:
    """A string equal for two requests exactly when they may run in one pipeline call; `spec` is the request's
    input spec (by default the one its fields describe)."""
    shared = request.model_dump(mode="json", exclude=set(PER_JOB_FIELDS | INPUT_FIELDS))
    # SDXL encodes an empty negative prompt as zeros and a given one through the text encoder: keep them apart.
    shared["has_negative_prompt"] = bool(request.negative_prompt)
    spec = spec if spec is not None else spec_of(request)
    if not spec.is_plain:  # plain text-to-image jobs keep the key they had before image inputs existed
        shared["inputs"] = spec.key()
    return json.dumps(shared, sort_keys=True)


@dataclass(frozen=True)
class JobResult:
    """What the executor hands back to a job's thread: its images and where the GPU's time went."""

    images: list[Any]
    warnings: list[str]
    load_s: float
    inference_s: float
    #: Images in the job's pipeline call (the record's `timings.batch_size`).
    cohort_size: int
    #: Wall-clock time (`time.time()`) the job's cohort started, for its queue wait.
    started_at: float


@dataclass(eq=False)
class CohortJob:
    """One job submitted to the executor.

    `on_step(done, total)` is called after each denoising step of the job's cohort (and once with `done=0` right
    before it starts); whatever it raises stops this job (not the cohort) and becomes the job's result.
    """

    job_id: str
    request: JobRequest
    on_step: StepCallback
    future: Future[JobResult] = field(default_factory=Future)
    key: str = ""
    submitted: float = field(default_factory=time.monotonic)
    #: When the job was created (`time.time()`): cohorts start with the oldest job waiting, whatever the order in
    #: which worker threads happened to submit them.
    created: float = field(default_factory=time.time)
    #: Lower goes first, before creation time: interactive jobs (0) overtake those of submitted batches (1).
    priority: int = INTERACTIVE_PRIORITY
    #: A `gpu_worker.checkpoint.Snapshot` to resume from (a job handed off by a spot-interrupted worker).
    resume: Any = None
    #: Called by the executor as the job's cohort forms, before `on_step(0, …)`: the runner claims the job here, so a
    #: job waiting for the GPU stays `queued` (cancelable at once, counted in queue positions). Raising drops it.
    start: Callable[[], None] | None = None
    #: The job's image inputs, prepared (None: text-to-image).
    inputs: PreparedInputs | None = None

    def __post_init__(self) -> None:
        self.key = cohort_key(self.request, self.inputs.spec if self.inputs is not None else None)
        if self.resume is not None:  # resumes at its own step: it runs alone
            self.key += f"|resume:{id(self)}"


class CohortQueue:
    """Pending jobs, handed out as cohorts of compatible jobs: interactive ones first, then oldest first.

    `take` waits for a first job, then up to `wait_s` *after that job was submitted* for compatible company, so
    under load (the oldest job has already waited while the GPU was busy) a cohort forms without any extra delay.
    A cohort holds at most `max_images` images (or what `limit` allows for its shape: see `gpu_worker.cohort_caps`),
    except a single job asking for more, which runs alone.
    """

    def __init__(self, *, max_images: int, wait_s: float, limit: Callable[[JobRequest], int] | None = None) -> None:
        self.max_images = max_images
        self.wait_s = wait_s
        self.limit = limit
        self._pending: list[CohortJob] = []
        self._changed = threading.Condition()
        self._closed = False

    def put(self, job: CohortJob) -> None:
        """Add `job`; raises `RuntimeError` once the queue is closed."""
        with self._changed:
            if self._closed:
                raise RuntimeError("the GPU executor is shut down")
            self._pending.append(job)
            self._changed.notify_all()

    def close(self) -> list[CohortJob]:
        """Refuse new jobs; returns those still pending (the caller fails them)."""
        with self._changed:
            self._closed = True
            pending, self._pending = self._pending, []
            self._changed.notify_all()
            return pending

    def __len__(self) -> int:
        with self._changed:
            return len(self._pending)

    def take(self, timeout_s: float | None = None, *, busy: Callable[[], bool] | None = None) -> list[CohortJob]:
        """The next cohort (oldest job first), or [] when closed or nothing came within `timeout_s`.

        While `busy()` is true (the device is still running another cohort) a cohort that is not full keeps waiting
        for company past `wait_s`: it could not start sooner anyway. Call `poke` when `busy()` turns false.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._pending or self._closed, timeout=timeout_s):
                return []
            if self._closed:
                return []
            head = self._pending[0]
            deadline = head.submitted + self.wait_s
            while self._fill(head) < self._max_images(head) and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if busy is None or not busy():
                        break
                    remaining = 0.5  # `poke` wakes it as soon as the device is free
                self._changed.wait(remaining)
            # An older job may have arrived meanwhile (threads submit in no particular order): it goes first.
            oldest = min(self._pending, key=lambda job: (job.priority, job.created), default=None)
            return self._pop_cohort(oldest) if oldest is not None else []

    def poke(self) -> None:
        """Wake a `take` that waits for company while the device is busy: the device is free now."""
        with self._changed:
            self._changed.notify_all()

    def _compatible(self, head: CohortJob) -> list[CohortJob]:
        return [job for job in self._pending if job.key == head.key]

    def _fill(self, head: CohortJob) -> int:
        return sum(job.request.num_images for job in self._compatible(head))

    def _max_images(self, head: CohortJob) -> int:
        return self.max_images if self.limit is None else min(self.max_images, self.limit(head.request))

    def _pop_cohort(self, head: CohortJob) -> list[CohortJob]:
        cohort: list[CohortJob] = []
        images, most = 0, self._max_images(head)
        for job in self._compatible(head):
            if cohort and images + job.request.num_images > most:
                continue  # a smaller job further back may still fit
            cohort.append(job)
            images += job.request.num_images
        for job in cohort:
            self._pending.remove(job)
        return cohort
