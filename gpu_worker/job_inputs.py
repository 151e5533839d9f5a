"""A job's image inputs on the worker: resolved once (`producer.inputs.resolve`), then made `PreparedInputs`.

`resolve_inputs` fetches each image from its origin on a job's first attempt, normalizes it and keeps it under
`inputs/<job>/`; every later attempt (a retry, a spot resume, a hand-off) reads it back from there. This module adds
what the worker computes from them (Canny edges for a ControlNet unit that asks for them) and pairs them with the
job's `InputSpec`. The runner prepares a job's inputs once per attempt, in the job's own thread (never on the GPU
executor's), and hands the same object to every pipeline call of the attempt: a cohort retried in halves after
out-of-memory, or a restart from step 0 after an unusable checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from producer.errors import InvalidInputError as InputRejected
from producer.inputs.resolve import InputSources, resolve_inputs
from producer.jobs import JobRequest

from .canny import canny
from .conditioning import PreparedInputs, Preprocess, spec_of
from .errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A job's prepared inputs, and the seconds it took: resolving (fetch or read back, decode, check, normalize,
    store) and preprocessing."""

    inputs: PreparedInputs
    resolve_s: float
    preprocess_s: float
    #: Object names fetched from their origin by this call (empty on every attempt after the first).
    fetched: frozenset[str]


def prepare_inputs(
    job_id: str, request: JobRequest, sources: InputSources, *, never_claimed: bool = False
) -> Prepared | None:
    """The job's inputs ready for its pipeline calls, or None for a job without images.

    Raises the worker's `InvalidInputError` (the job fails with `invalid_input`, no retry) for an unusable image,
    and `storage.StorageError` for a storage outage (worth a retry)."""
    if not request.has_inputs:
        return None
    started = time.perf_counter()
    try:
        resolved = resolve_inputs(job_id, request, sources, never_claimed=never_claimed)
    except InputRejected as exc:
        raise InvalidInputError(f"{exc.field}: {exc.reason}") from exc
    resolve_s = time.perf_counter() - started
    spec = spec_of(request)
    started = time.perf_counter()
    control = []
    for index, unit in enumerate(spec.controlnets):
        image = resolved[f"controlnet-{index}"]
        control.append(canny(image) if unit.preprocess is Preprocess.CANNY else image)
    preprocess_s = time.perf_counter() - started
    prepared = PreparedInputs(
        spec,
        image=resolved.images.get("image"),
        mask=resolved.images.get("mask"),
        control_images=tuple(control),
        ip_adapter_image=resolved.images.get("ip-adapter"),
    )
    origin = f"fetched {', '.join(sorted(resolved.fetched))}" if resolved.fetched else "read back from storage"
    log.info("job %s: inputs %s in %.3f s (+%.3f s preprocessing)", job_id, origin, resolve_s, preprocess_s)
    return Prepared(prepared, resolve_s, preprocess_s, resolved.fetched)
