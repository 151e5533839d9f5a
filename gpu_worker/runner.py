"""Running one job: claim it, load the model, denoise with progress and cancellation, encode, upload, settle."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import ValidationError

from producer.jobs import ErrorCode, JobMessage, JobStatus, Output, Progress, Timings, is_job_id, output_key
from producer.store import JobStore
from storage import NotSupportedError, ObjectStore, StorageError

from .encode import encode_image
from .errors import JobCanceledError, JobTimeoutError, LeaseLostError, TransientError, WorkerError
from .inference import generate, prompt_truncation_warning
from .lease import Lease
from .models import LoadedModels
from .settings import WorkerSettings

log = logging.getLogger(__name__)

#: Re-sends a job message after a delay (used when another attempt still holds the job's lease).
Resend = Callable[[JobMessage, float], None]


@dataclass
class _Run:
    message: JobMessage
    attempt: int
    lease: Lease
    started: float
    timings: dict[str, float]
    warnings: list[str]


class JobRunner:
    """Executes job messages. Every failure ends in a recorded status; only transient ones are retried."""

    def __init__(
        self, settings: WorkerSettings, store: JobStore, objects: ObjectStore, models: LoadedModels, resend: Resend
    ) -> None:
        self.settings = settings
        self.store = store
        self.objects = objects
        self.models = models
        self.resend = resend

    def run(self, payload: Any) -> None:
        """Run the job in `payload` (a `JobMessage` as JSON data); raises `TransientError` to ask for a retry."""
        try:
            message = JobMessage.model_validate(payload)
        except ValidationError as exc:
            self._reject(payload, exc)
            return
        claim = self.store.claim(
            message.job_id,
            worker=self.settings.worker_id,
            lease_s=self.settings.lease_s,
            max_attempts=self.settings.max_attempts,
        )
        if claim.outcome == "busy":  # a live attempt elsewhere: look again once its lease could have lapsed
            self.resend(message, claim.retry_after_s + 1.0)
            return
        if claim.outcome != "claimed":
            log.info("job %s: nothing to run (%s)", message.job_id, claim.status)
            return
        with Lease(self.store, message.job_id, claim.attempt, lease_s=self.settings.lease_s) as lease:
            self._attempt(_Run(message, claim.attempt, lease, time.monotonic(), {}, []))

    def _attempt(self, run: _Run) -> None:
        job_id, attempt = run.message.job_id, run.attempt
        try:
            outputs = self._execute(run)
        except LeaseLostError:
            log.warning("job %s attempt %d lost its lease; another attempt owns it", job_id, attempt)
        except JobCanceledError:
            self.store.settle(job_id, attempt, JobStatus.CANCELED, timings=self._timings(run))
        except (StorageError, redis.RedisError, TransientError) as exc:
            if _is_permanent(exc):
                self._fail(run, ErrorCode.STORAGE, f"cannot write outputs: {exc}")
                return
            if attempt >= self.settings.max_attempts:
                self._fail(run, ErrorCode.STORAGE, f"gave up after {attempt} attempts: {exc}")
                return
            log.warning("job %s attempt %d hit a transient error, handing it back: %s", job_id, attempt, exc)
            self.store.settle(job_id, attempt, JobStatus.QUEUED, worker="")
            raise TransientError(str(exc)) from exc
        except WorkerError as exc:
            self._fail(run, exc.error_code, str(exc))
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._fail(run, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        else:
            timings = self._timings(run)
            self.store.settle(
                job_id, attempt, JobStatus.SUCCEEDED, outputs=outputs, timings=timings, warnings=run.warnings
            )
            log.info(
                "job %s succeeded: %d image(s), attempt %d, %s",
                job_id,
                len(outputs),
                attempt,
                " ".join(f"{name}={value:.3f}" for name, value in timings.model_dump(exclude_none=True).items()),
            )

    def _execute(self, run: _Run) -> list[Output]:
        request, job_id = run.message.request, run.message.job_id
        record = self.store.get(job_id)
        run.warnings.extend(record.warnings)
        if record.started_at:
            run.timings["queue_wait_s"] = (record.started_at - record.created_at).total_seconds()
        assert request.model is not None and request.seed is not None  # JobMessage guarantees both
        with self.models.use(request.model) as (pipe, run.timings["load_s"]):
            truncated = prompt_truncation_warning(pipe, request.prompt)
            if truncated:
                run.warnings.append(truncated)
            started = time.perf_counter()
            images = generate(pipe, request, on_step=self._on_step(run))
            run.timings["inference_s"] = time.perf_counter() - started

        started = time.perf_counter()
        encoded = [encode_image(image, request.output_format) for image in images]
        run.timings["encode_s"] = time.perf_counter() - started

        started = time.perf_counter()
        outputs = []
        for index, (image, data) in enumerate(zip(images, encoded, strict=True)):
            key = output_key(job_id, index, request.output_format)
            seed = request.seed + index
            self.objects.put(
                key,
                data,
                content_type=request.output_format.content_type,
                content_disposition=f'inline; filename="{job_id}-{index}.{request.output_format.extension}"',
                metadata={"job_id": job_id, "seed": str(seed)},
            )
            outputs.append(
                Output(
                    key=key,
                    content_type=request.output_format.content_type,
                    bytes=len(data),
                    width=image.width,
                    height=image.height,
                    seed=seed,
                )
            )
        run.timings["upload_s"] = time.perf_counter() - started
        return outputs

    def _on_step(self, run: _Run) -> Callable[[int, int], None]:
        last_report = 0.0
        deadline = run.started + self.settings.job_timeout_s

        def on_step(step: int, total: int) -> None:
            nonlocal last_report
            now = time.monotonic()
            if now - last_report >= self.settings.progress_interval_s or step == total:
                last_report = now
                run.lease.report(Progress(step=step, total=total))
            if run.lease.lost.is_set():
                raise LeaseLostError(run.message.job_id)
            if run.lease.cancel.is_set():
                raise JobCanceledError(f"canceled at step {step} of {total}")
            if now > deadline:
                raise JobTimeoutError(f"still denoising after {self.settings.job_timeout_s:g} s (step {step}/{total})")

        return on_step

    def _fail(self, run: _Run, code: ErrorCode, message: str) -> None:
        log.warning("job %s failed (%s): %s", run.message.job_id, code.value, message)
        self.store.settle(
            run.message.job_id,
            run.attempt,
            JobStatus.FAILED,
            error={"code": code.value, "message": message},
            timings=self._timings(run),
        )

    @staticmethod
    def _timings(run: _Run) -> Timings:
        return Timings(**run.timings)

    def _reject(self, payload: Any, exc: ValidationError) -> None:
        """A message this worker refuses: fail its job (if it names one) with `invalid_input`, never retry."""
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        log.error("rejecting invalid job message %r: %s", job_id, exc)
        if not isinstance(job_id, str) or not is_job_id(job_id):
            return
        claim = self.store.claim(job_id, worker=self.settings.worker_id, lease_s=self.settings.lease_s, max_attempts=99)
        if claim.outcome == "claimed":
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            self.store.settle(
                job_id, claim.attempt, JobStatus.FAILED, error={"code": "invalid_input", "message": detail}
            )


def _is_permanent(exc: BaseException) -> bool:
    """Storage errors that retrying cannot fix: bad keys or metadata, bad configuration, missing permissions."""
    return isinstance(exc, (ValueError, PermissionError, NotSupportedError))
