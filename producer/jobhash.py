"""A job's record in Redis: the hash at `keys.job(id)`. This module is the one place that knows its fields.

Each field is a `JobField`; each `JobRecord` attribute stored in the hash has one codec here (`CODECS`) that
both writers (`encode`, `new_job`) and the one reader (`record`) use. The worker's usage fields (`gpu_s`, ...)
decode to a `Usage`, which `record` prices when given a `Pricer`, so a page of jobs is priced from the hashes it
already read. The Lua scripts that move a job between statuses (producer/lua: claim, touch, settle, cancel, reap,
create, batch, usage) write fields in place; every field name they use is a `JobField` (a test checks it).

A new field: a `JobField` member, its codec in `CODECS` when `JobRecord` shows it (the round-trip test in
tests/producer/test_jobhash.py then covers it), and the writer that sets it (`encode` for Python writers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from pydantic_core import to_json

from . import line
from .jobs import (
    CONTRACT_VERSION,
    DEFAULT_WEBHOOK_EVENTS,
    CheckpointRef,
    Family,
    JobError,
    JobRecord,
    JobRequest,
    JobStatus,
    Output,
    Progress,
    Timings,
    WebhookEventType,
)
from .jobs.costs import Capacity, JobCost
from .jobs.enums import TextEnum


class JobField(TextEnum):
    """Every field of a job's hash."""

    ID = "id"
    VERSION = "v"
    STATUS = "status"
    REQUEST = "request"
    #: Creation sequence: the score of the job in every index (written by lua/create.lua and lua/batch.lua).
    SEQ = "seq"
    ATTEMPTS = "attempts"
    HANDOFFS = "handoffs"
    CREATED_AT = "created_at"
    STARTED_AT = "started_at"
    FINISHED_AT = "finished_at"
    #: Until when the running attempt holds the job (Redis clock); the janitor reaps it after that.
    LEASE_UNTIL = "lease_until"
    WORKER = "worker"
    PROGRESS = "progress"
    TIMINGS = "timings"
    OUTPUTS = "outputs"
    ERROR = "error"
    WARNINGS = "warnings"
    CHECKPOINT = "checkpoint"
    CANCEL = "cancel"
    TENANT = "tenant"
    KEY_ID = "key_id"
    BATCH_ID = "batch_id"
    #: "1": the job's transitions feed the webhook events stream; "2": its progress too (lua/_moved.lua).
    HOOKS = "hooks"
    GPU_S = "gpu_s"
    INSTANCE_TYPE = "instance_type"
    CAPACITY = "capacity"
    USAGE_DAY = "usage_day"
    #: The model family and dtype that rendered the job (the worker's settle).
    FAMILY = "family"
    DTYPE = "dtype"
    #: The Redis id of the queue message that carries the job, when it is not the job id (producer/msgref.py).
    MESSAGE = "rmsg"


#: What `producer.cost` reads to price a job.
USAGE_FIELDS = tuple(f.value for f in (JobField.GPU_S, JobField.INSTANCE_TYPE, JobField.CAPACITY, JobField.USAGE_DAY))


@dataclass(frozen=True)
class Usage:
    """The GPU time a job used (every attempt that finished), and where: what its cost is computed from."""

    gpu_s: float
    instance_type: str
    capacity: Capacity
    day: date


#: Prices a job's usage (`CostCalculator.pricer()`); one pricer per page reads each day's bill once.
Pricer = Callable[[Usage], JobCost]


def text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


def decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    """An HGETALL reply as text."""
    return {text(k): text(v) for k, v in raw.items()}


# Encoders: what a value becomes in the hash. Strings pass through (a caller may hand over JSON it made).


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(_jsonable(value))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _model_json(value: Any) -> str:
    return value if isinstance(value, str) else value.model_dump_json()


#: Request fields whose default is empty (null, "", [], {}), in their JSON form. A stored request leaves them out
#: when they hold exactly that (decoding restores them): a queued job's record is its biggest part (see
#: bench/scale.py). Fields with other defaults are always written: what was resolved stays what runs.
_EMPTY_DEFAULTS: dict[str, Any] = {
    name: [] if field.default == () else field.default
    for name, field in JobRequest.model_fields.items()
    if field.default_factory is None and (field.default is None or field.default in ("", ()))
} | {name: {} for name, field in JobRequest.model_fields.items() if field.default_factory is dict}


def _request_json(value: JobRequest | Mapping[str, Any] | str) -> str:
    # A dump is serialised by pydantic-core too: the same JSON `model_dump_json` writes, less the empty defaults.
    # (`type(...) is dict` first: the batch path, 10 000 times a request, skips the slower ABC check.)
    if isinstance(value, str):
        return value
    dump = value if type(value) is dict or isinstance(value, Mapping) else value.model_dump(mode="json")
    empty = _EMPTY_DEFAULTS
    return to_json({k: v for k, v in dump.items() if k not in empty or v != empty[k]}).decode()


def _time_text(value: datetime | float | str) -> str:
    if isinstance(value, str):
        return value
    return repr(value.timestamp() if isinstance(value, datetime) else float(value))


def _int_text(value: int | str) -> str:
    return str(int(value))


def _flag(value: bool | str) -> str:
    return value if isinstance(value, str) else ("1" if value else "0")


def _plain(value: Any) -> str:
    return str(value)


# Decoders: `None` is a field the hash does not have.


def _time(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=timezone.utc) if value else None


def _required_time(value: str | None) -> datetime:
    found = _time(value)
    if found is None:
        raise ValueError("a job record without created_at")
    return found


def _optional_model(model: Any) -> Callable[[str | None], Any]:
    return lambda value: model.model_validate_json(value) if value else None


def _required(value: str | None) -> str:
    if value is None:
        raise ValueError("a job record without a required field")
    return value


@dataclass(frozen=True)
class Codec:
    """How one `JobRecord` attribute is stored: its hash field, and the functions that write and read it."""

    field: JobField
    encode: Callable[[Any], str]
    decode: Callable[[str | None], Any]


#: `JobRecord` attributes computed on read, never stored: `cost` (priced from the usage fields) and
#: `queue_position` (the job's rank in the line, `producer.line`), both set by `record` from what the same read
#: fetched; `eta_s` (`producer.eta`), set by the reader from the fleet's throughput. A new computed attribute goes
#: here (the round-trip test checks every other attribute has a codec). `inputs` (an image job's inputs with fresh
#: presigned links) is filled in by the API as it serves the record, from the request and the job's storage.
COMPUTED = frozenset({"cost", "queue_position", "eta_s", "inputs"})

#: `JobRecord` attribute → its codec: every attribute but those in `COMPUTED`.
CODECS: dict[str, Codec] = {
    "v": Codec(JobField.VERSION, _int_text, lambda v: int(v) if v else CONTRACT_VERSION),
    "id": Codec(JobField.ID, _plain, _required),
    "status": Codec(JobField.STATUS, _plain, lambda v: JobStatus(_required(v))),
    "request": Codec(JobField.REQUEST, _request_json, lambda v: JobRequest.model_validate_json(_required(v))),
    "attempts": Codec(JobField.ATTEMPTS, _int_text, lambda v: int(v or "0")),
    "created_at": Codec(JobField.CREATED_AT, _time_text, _required_time),
    "started_at": Codec(JobField.STARTED_AT, _time_text, _time),
    "finished_at": Codec(JobField.FINISHED_AT, _time_text, _time),
    "progress": Codec(JobField.PROGRESS, _model_json, _optional_model(Progress)),
    "timings": Codec(JobField.TIMINGS, _json, lambda v: Timings.model_validate_json(v) if v else Timings()),
    "outputs": Codec(JobField.OUTPUTS, _json, lambda v: [Output.model_validate(o) for o in json.loads(v or "[]")]),
    "error": Codec(JobField.ERROR, _json, _optional_model(JobError)),
    "worker": Codec(JobField.WORKER, _plain, lambda v: v),
    "cancel_requested": Codec(JobField.CANCEL, _flag, lambda v: v == "1"),
    "warnings": Codec(JobField.WARNINGS, _json, lambda v: json.loads(v or "[]")),
    "tenant": Codec(JobField.TENANT, _plain, lambda v: v or None),
    "batch_id": Codec(JobField.BATCH_ID, _plain, lambda v: v or None),
    "checkpoint": Codec(JobField.CHECKPOINT, _json, _optional_model(CheckpointRef)),
    "handoffs": Codec(JobField.HANDOFFS, _int_text, lambda v: int(v or "0")),
    "family": Codec(JobField.FAMILY, _plain, lambda v: Family(v) if v else None),
    "dtype": Codec(JobField.DTYPE, _plain, lambda v: v or None),
}


def encode(values: Mapping[str, Any]) -> dict[str, str]:
    """Hash fields for `JobRecord` attribute values (`None`: not written); raises `KeyError` on an unknown name."""
    return {str(CODECS[name].field): CODECS[name].encode(value) for name, value in values.items() if value is not None}


def record(fields: Mapping[str, str], price: Pricer | None = None, *, rank: int | None = None) -> JobRecord:
    """The `JobRecord` a job's hash holds; with `price`, its cost too (from the usage fields of the same hash);
    with `rank` (its ZRANK in the line, read in the same round trip), its `queue_position` while it is queued."""
    values = {name: codec.decode(fields.get(codec.field)) for name, codec in CODECS.items()}
    values["queue_position"] = line.position(values["status"], rank)
    if price is not None:
        used = usage(fields)
        values["cost"] = price(used) if used is not None else None
    return JobRecord(**values)


def usage(fields: Mapping[str, str]) -> Usage | None:
    """The job's usage from its hash (None until a worker recorded GPU time for it)."""
    gpu_s, day = fields.get(JobField.GPU_S), fields.get(JobField.USAGE_DAY)
    if not gpu_s or not day:
        return None
    return Usage(
        gpu_s=float(gpu_s),
        instance_type=fields.get(JobField.INSTANCE_TYPE) or "unknown",
        capacity=Capacity(fields.get(JobField.CAPACITY) or Capacity.ON_DEMAND.value),
        day=date.fromisoformat(day),
    )


def usage_of(values: Iterable[bytes | str | None]) -> Usage | None:
    """`usage` of an HMGET of `USAGE_FIELDS` (what pricing a batch of 10 000 jobs reads)."""
    return usage({name: text(v) for name, v in zip(USAGE_FIELDS, values, strict=True) if v is not None})


def usage_fields(instance_type: str, capacity: Capacity, day: date) -> dict[str, str]:
    """Where a worker's usage goes (the seconds themselves are added to `JobField.GPU_S` by lua/usage.lua)."""
    return {JobField.INSTANCE_TYPE: instance_type, JobField.CAPACITY: capacity.value, JobField.USAGE_DAY: str(day)}


def hooks_flag(request: JobRequest | Mapping[str, Any]) -> str | None:
    """`JobField.HOOKS` of a job (a request, or its JSON dump): whether its transitions (and progress) feed the
    webhook events stream."""
    if isinstance(request, JobRequest):
        url, wanted = request.webhook_url, request.wanted_webhook_events
    else:
        url, events = request.get("webhook_url"), request.get("webhook_events")
        wanted = DEFAULT_WEBHOOK_EVENTS if events is None else frozenset(WebhookEventType(e) for e in events)
    if not url:
        return None
    return "2" if WebhookEventType.JOB_PROGRESS in wanted else "1"


# `new_job` runs once per job of a batch (10 000 per request): field names as plain strings, read once.
_ID, _VERSION, _STATUS, _REQUEST = (
    JobField.ID.value,
    JobField.VERSION.value,
    JobField.STATUS.value,
    JobField.REQUEST.value,
)
_CREATED_AT, _WARNINGS = JobField.CREATED_AT.value, JobField.WARNINGS.value
_TENANT, _KEY_ID, _BATCH_ID, _HOOKS = (
    JobField.TENANT.value,
    JobField.KEY_ID.value,
    JobField.BATCH_ID.value,
    JobField.HOOKS.value,
)
_QUEUED, _CONTRACT = JobStatus.QUEUED.value, str(CONTRACT_VERSION)


def new_job(
    job_id: str,
    request: JobRequest | Mapping[str, Any],
    *,
    created_at: float,
    tenant: str = "",
    key_id: str = "",
    batch_id: str | None = None,
    warnings: Iterable[str] = (),
) -> dict[str, str]:
    """The fields of a new `queued` record of a resolved request (a `JobRequest`, or its JSON dump as the job
    service makes it); the scripts add `JobField.SEQ`. Every job, single or in a batch, is written from this."""
    noted = list(warnings)
    # No `attempts` ("0") or empty `warnings` ("[]"): their decoders and the scripts read a missing field as those,
    # and a queued job's record is most of its footprint (bench/scale.py).
    fields = {
        _ID: job_id,
        _VERSION: _CONTRACT,
        _STATUS: _QUEUED,
        _REQUEST: _request_json(request),
        _CREATED_AT: repr(float(created_at)),
    }
    if noted:
        fields[_WARNINGS] = json.dumps(noted)
    if tenant:
        fields[_TENANT] = tenant
    if key_id:
        fields[_KEY_ID] = key_id
    if batch_id:
        fields[_BATCH_ID] = batch_id
    hooks = hooks_flag(request)
    if hooks:
        fields[_HOOKS] = hooks
    return fields


def fresh_record(
    fields: Mapping[str, str], request: JobRequest, *, tenant: str | None = None, rank: int | None = None
) -> JobRecord:
    """`record` of a job `new_job` just made `fields` for, given the request model they were encoded from: what
    was written is not decoded again (a submission answers with it). `tenant`: the owner the write found (lua/
    submit.lua learns it from the API key), when `fields` do not hold it."""
    warnings = fields.get(_WARNINGS)
    return JobRecord(
        id=fields[_ID],
        status=JobStatus.QUEUED,
        request=request,
        created_at=datetime.fromtimestamp(float(fields[_CREATED_AT]), tz=timezone.utc),
        warnings=json.loads(warnings) if warnings else [],
        tenant=(fields.get(_TENANT) if tenant is None else tenant) or None,
        batch_id=fields.get(_BATCH_ID) or None,
        queue_position=line.position(JobStatus.QUEUED, rank),
    )


#: The two fields a live watcher polls (`GET /v1/jobs/{id}/events`): a cheap HMGET, and what changes while it runs.
WATCHED_FIELDS = (JobField.STATUS.value, JobField.PROGRESS.value)


def watched(values: Iterable[bytes | str | None]) -> tuple[JobStatus | None, Progress | None]:
    """The status and progress of an HMGET of `WATCHED_FIELDS` (status None: the record is gone)."""
    status, progress = (text(v) if v is not None else None for v in values)
    return (JobStatus(status) if status else None), CODECS["progress"].decode(progress)
