"""The job record codec (`producer.jobhash`): every `JobRecord` field survives encode → a real Redis → decode."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timezone

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import jobhash, keys
from producer.jobhash import CODECS, JobField, Usage
from producer.jobs import (
    MAX_SEED,
    CheckpointRef,
    ErrorCode,
    Family,
    JobError,
    JobMessage,
    JobRecord,
    JobRequest,
    JobStatus,
    LoraRequest,
    Output,
    OutputFormat,
    Progress,
    Scheduler,
    Timings,
    WebhookEventType,
    new_job_id,
)
from producer.jobs.costs import Capacity

pytestmark = pytest.mark.redis

_text = st.text(max_size=30)
_name = st.from_regex(r"[a-z0-9][a-z0-9-]{0,19}", fullmatch=True)
_float = st.floats(allow_nan=False, allow_infinity=False)
_count = st.integers(min_value=0, max_value=10**9)
_when = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc))
_job_events = [e for e in WebhookEventType if e is not WebhookEventType.BATCH_COMPLETED]

requests = st.builds(
    JobRequest,
    prompt=st.text(min_size=1, max_size=40).filter(str.strip),
    negative_prompt=_text,
    model=st.none() | st.sampled_from(["tiny", "org/name", "s3://bucket/model"]),
    width=st.sampled_from([64, 512, 1024]),
    height=st.sampled_from([64, 768, 1024]),
    steps=st.integers(min_value=1, max_value=150),
    guidance_scale=st.floats(min_value=0, max_value=30),
    seed=st.none() | st.integers(min_value=0, max_value=MAX_SEED),
    num_images=st.integers(min_value=1, max_value=8),
    scheduler=st.sampled_from(Scheduler),
    output_format=st.sampled_from(OutputFormat),
    webhook_url=st.none() | st.just("https://example.com/hook"),
    webhook_events=st.none() | st.lists(st.sampled_from(_job_events), max_size=4),
    loras=st.lists(
        st.builds(LoraRequest, name=_name, scale=st.floats(min_value=-4, max_value=4)),
        max_size=4,
        unique_by=lambda lora: lora.name,
    ).map(tuple),
    metadata=st.dictionaries(_name, _text, max_size=4),
)

records = st.builds(
    JobRecord,
    id=st.builds(new_job_id),
    status=st.sampled_from(JobStatus),
    request=requests,
    attempts=_count,
    created_at=_when,
    started_at=st.none() | _when,
    finished_at=st.none() | _when,
    progress=st.none() | st.builds(Progress, step=_count, total=_count),
    timings=st.builds(
        Timings,
        queue_wait_s=st.none() | _float,
        load_s=st.none() | _float,
        inference_s=st.none() | _float,
        encode_s=st.none() | _float,
        upload_s=st.none() | _float,
        batch_size=st.none() | _count,
    ),
    outputs=st.lists(
        st.builds(
            Output,
            key=_text,
            content_type=_text,
            bytes=_count,
            width=_count,
            height=_count,
            seed=_count,
            url=st.none() | _text,
        ),
        max_size=3,
    ),
    error=st.none() | st.builds(JobError, code=st.sampled_from(ErrorCode), message=_text),
    worker=st.none() | _text,
    cancel_requested=st.booleans(),
    warnings=st.lists(_text, max_size=3),
    # An empty tenant or batch id is never written (the record has none): the codec reads "" as None.
    tenant=st.none() | st.text(min_size=1, max_size=20),
    batch_id=st.none() | st.builds(new_job_id),
    checkpoint=st.none() | st.builds(CheckpointRef, key=_text, step=_count, attempt=st.integers(1, 100)),
    handoffs=_count,
    family=st.none() | st.sampled_from(Family),
    dtype=st.none() | st.sampled_from(["float16", "bfloat16", "float32"]),
)


@pytest.fixture(scope="module")
def client(redis_server: str) -> Iterator[redis.Redis]:
    # Module-scoped (hypothesis runs many examples per test): each example writes its own job id.
    with redis.Redis.from_url(redis_server) as found:
        yield found


def test_every_record_attribute_has_one_codec() -> None:
    # A field added to JobRecord without a codec here would silently never be stored.
    assert set(JobRecord.model_fields) - {"cost"} - jobhash.COMPUTED == set(CODECS)
    assert "cost" in jobhash.COMPUTED and not jobhash.COMPUTED & set(CODECS)
    assert len({codec.field for codec in CODECS.values()}) == len(CODECS)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records)
def test_every_field_survives_a_round_trip_through_redis(client: redis.Redis, record: JobRecord) -> None:
    fields = jobhash.encode({name: getattr(record, name) for name in CODECS})
    key = keys.job(record.id)
    client.hset(key, mapping=fields)
    try:
        back = jobhash.record(jobhash.decode(client.hgetall(key)))  # type: ignore[arg-type]
    finally:
        client.delete(key)
    assert back == record


@settings(max_examples=50, deadline=None)
@given(
    gpu_s=st.floats(min_value=0.001, max_value=1e7),
    instance_type=_name,
    capacity=st.sampled_from(Capacity),
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
)
def test_usage_survives_a_round_trip_and_is_priced_from_the_same_hash(
    client: redis.Redis, gpu_s: float, instance_type: str, capacity: Capacity, day: date
) -> None:
    job_id = new_job_id()
    key = keys.job(job_id)
    fields = jobhash.new_job(job_id, JobRequest(prompt="a cat").resolved("tiny"), created_at=1.0)
    client.hset(
        key, mapping={**fields, JobField.GPU_S.value: repr(gpu_s), **jobhash.usage_fields(instance_type, capacity, day)}
    )
    try:
        stored = jobhash.decode(client.hgetall(key))  # type: ignore[arg-type]
    finally:
        client.delete(key)
    usage = Usage(gpu_s, instance_type, capacity, day)
    assert jobhash.usage(stored) == usage
    seen: list[Usage] = []
    record = jobhash.record(stored, lambda used: seen.append(used) or _cost(used))
    assert seen == [usage] and record.cost == _cost(usage)
    assert jobhash.record(stored).cost is None  # no pricer: no cost


def _cost(usage: Usage):  # type: ignore[no-untyped-def]
    from producer.jobs.costs import JobCost

    return JobCost(
        gpu_s=usage.gpu_s,
        instance_type=usage.instance_type,
        capacity=usage.capacity,
        usd_per_hour=1.0,
        gpu_usd=usage.gpu_s,
        overhead_usd=0.0,
        total_usd=usage.gpu_s,
        day=usage.day,
        final=True,
    )


@given(request=requests)
def test_a_job_message_made_without_the_model_is_the_models_dump(request: JobRequest) -> None:
    resolved = request.resolved("tiny")
    job_id = new_job_id()
    wire = JobMessage.wire(job_id, resolved.model_dump(mode="json"))
    assert wire == JobMessage(job_id=job_id, request=resolved).model_dump(mode="json")
    assert JobMessage.model_validate(wire).request == resolved
    # The short form a new job is sent with: only the id (the worker reads the request from the record).
    assert JobMessage.model_validate(JobMessage.wire(job_id)) == JobMessage(job_id=job_id)


@given(request=requests)
def test_a_new_record_from_the_request_or_its_dump_is_the_same(request: JobRequest) -> None:
    # A batch writes records from the dump (JobService.prepare); a direct caller from the model.
    resolved = request.resolved("tiny")
    job_id = new_job_id()
    from_model = jobhash.new_job(job_id, resolved, created_at=2.5, tenant="acme", batch_id="b" * 32)
    from_dump = jobhash.new_job(
        job_id, resolved.model_dump(mode="json"), created_at=2.5, tenant="acme", batch_id="b" * 32
    )
    assert from_model == from_dump
    assert jobhash.record(from_model).request == resolved
    wants_hooks = resolved.webhook_url is not None
    assert (JobField.HOOKS.value in from_model) is wants_hooks


@given(request=requests, rank=st.one_of(st.none(), st.integers(0, 10**6)), noted=st.lists(st.text(max_size=5)))
def test_a_fresh_record_is_the_record_its_fields_decode_to(request: JobRequest, rank: int | None, noted: list) -> None:
    # A submission answers without decoding what it wrote: the same record as reading it back.
    resolved = request.resolved("tiny")
    fields = jobhash.new_job(new_job_id(), resolved, created_at=1.25, warnings=noted, batch_id="b" * 32)
    assert jobhash.fresh_record(fields, resolved, tenant="acme", rank=rank) == jobhash.record(
        {**fields, JobField.TENANT.value: "acme"}, rank=rank
    )
    owned = jobhash.new_job(new_job_id(), resolved, created_at=1.25, tenant="acme")
    assert jobhash.fresh_record(owned, resolved, rank=rank) == jobhash.record(owned, rank=rank)
