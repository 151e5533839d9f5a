"""Which requests share a pipeline call, and how the cohort queue forms cohorts (no pipeline needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gpu_worker.cohort_caps import CohortCaps
from gpu_worker.cohorts import BATCH_SUBMISSION_PRIORITY, PER_JOB_FIELDS, CohortJob, CohortQueue, cohort_key
from producer.jobs import JobRequest, Scheduler

MakeJob = Callable[..., JobRequest]


def _job(request: JobRequest) -> CohortJob:
    return CohortJob("0" * 32, request, lambda done, total: None)


def test_per_image_and_after_denoising_fields_do_not_split_cohorts(job: MakeJob) -> None:
    base = job()
    for other in (
        job(prompt="something else", seed=99, num_images=3),
        job(output_format="jpeg", metadata={"order": "1"}, webhook_url="https://example.com/hook"),
    ):
        assert cohort_key(other) == cohort_key(base)


def test_every_parameter_of_the_denoising_run_splits_cohorts(job: MakeJob) -> None:
    base = cohort_key(job())
    for change in (
        {"model": "/models/other"},
        {"width": 72},
        {"height": 72},
        {"steps": 5},
        {"guidance_scale": 3.0},
        {"scheduler": Scheduler.DDIM},
        {"negative_prompt": "blurry"},  # SDXL encodes "no negative prompt" differently from a given one
    ):
        assert cohort_key(job(**change)) != base, change
    assert cohort_key(job(negative_prompt="blurry")) == cohort_key(job(negative_prompt="grainy"))


def test_a_field_added_to_the_request_later_splits_cohorts_until_declared_per_job() -> None:
    # The key is built from every field except the declared per-job ones, so a new parameter (a LoRA set, say)
    # can never silently be shared across a cohort.
    assert set(JobRequest.model_fields) - PER_JOB_FIELDS >= {"model", "width", "height", "steps", "scheduler"}
    assert set(JobRequest.model_fields) >= PER_JOB_FIELDS


def test_take_returns_the_oldest_job_with_its_compatible_company(job: MakeJob) -> None:
    queue = CohortQueue(max_images=4, wait_s=0)
    a, b, c, d = (_job(job(steps=s, seed=i)) for i, s in enumerate((3, 4, 3, 3)))
    for item in (a, b, c, d):
        queue.put(item)
    assert queue.take() == [a, c, d]
    assert queue.take() == [b]
    assert queue.take(timeout_s=0.01) == []


def test_take_waits_for_company_measured_from_the_oldest_submission(job: MakeJob) -> None:
    queue = CohortQueue(max_images=4, wait_s=0.3)
    first = _job(job())
    queue.put(first)
    started = time.monotonic()
    later = _job(job(seed=2))
    threading.Timer(0.05, queue.put, args=(later,)).start()
    assert queue.take() == [first, later]
    waited = time.monotonic() - started
    assert 0.25 <= waited < 5  # waited for more until the deadline, since the cohort never filled


def test_take_does_not_wait_once_the_oldest_job_has_waited_long_enough(job: MakeJob) -> None:
    queue = CohortQueue(max_images=4, wait_s=0.2)
    queue.put(_job(job()))
    time.sleep(0.25)  # the GPU was busy meanwhile
    started = time.monotonic()
    assert len(queue.take()) == 1
    assert time.monotonic() - started < 0.15


def test_a_full_cohort_is_taken_at_once(job: MakeJob) -> None:
    queue = CohortQueue(max_images=2, wait_s=30)
    queue.put(_job(job(num_images=2)))
    started = time.monotonic()
    assert len(queue.take()) == 1
    assert time.monotonic() - started < 5


def test_a_job_larger_than_the_cohort_limit_runs_alone(job: MakeJob) -> None:
    queue = CohortQueue(max_images=2, wait_s=0)
    big, small = _job(job(num_images=5)), _job(job(seed=3))
    queue.put(big)
    queue.put(small)
    assert queue.take() == [big]
    assert queue.take() == [small]


def test_close_hands_back_what_is_pending_and_wakes_takers(job: MakeJob) -> None:
    queue = CohortQueue(max_images=4, wait_s=0)
    pending = _job(job())
    queue.put(pending)
    assert queue.close() == [pending]
    assert queue.take() == [] and len(queue) == 0


def test_the_oldest_job_goes_first_whatever_the_order_threads_submitted_in(job: MakeJob) -> None:
    queue = CohortQueue(max_images=4, wait_s=0)
    newer, older = _job(job(steps=3)), _job(job(steps=4))
    older.created = newer.created - 10  # created first, but its thread was slower to submit
    queue.put(newer)
    queue.put(older)
    assert queue.take() == [older]
    assert queue.take() == [newer]


def test_an_interactive_job_goes_before_older_jobs_of_a_submitted_batch(job: MakeJob) -> None:
    queue = CohortQueue(max_images=4, wait_s=0)
    batch_job, interactive = _job(job(steps=3)), _job(job(steps=4))
    batch_job.priority = BATCH_SUBMISSION_PRIORITY
    batch_job.created = interactive.created - 60  # waiting for a minute already
    queue.put(batch_job)
    queue.put(interactive)
    assert queue.take() == [interactive]
    assert queue.take() == [batch_job]


def test_a_cap_drops_after_out_of_memory_and_rises_back_slowly(job: MakeJob) -> None:
    caps = CohortCaps(8, raise_after=3)
    small, large = job(width=64, height=64), job(width=128, height=128)
    assert caps.out_of_memory(small, 8) == 4 and caps.limit(small) == 4 and caps.limit(large) == 8
    for _ in range(2):
        caps.fitted(small, 4)
    caps.fitted(small, 3)  # below the cap: proves nothing about the cap
    assert caps.limit(small) == 4
    caps.fitted(small, 4)
    assert caps.limit(small) == 5  # three calls in a row at the cap fitted: one more image
    assert caps.out_of_memory(small, 5) == 4  # back to what fitted, not to half
    for _ in range(3 * 4):
        caps.fitted(small, caps.limit(small))
    assert caps.limit(small) == 8  # back at the maximum: forgotten
