"""The wire contract: what a job request accepts and refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from producer.jobs import MAX_SEED, JobMessage, JobRequest, JobStatus, OutputFormat, new_job_id, output_key

BAD = {
    "width not a multiple of 8": {"width": 65},
    "width below 64": {"width": 56},
    "height above 2048": {"height": 2056},
    "area above the cap": {"width": 2048, "height": 2048},
    "zero steps": {"steps": 0},
    "too many steps": {"steps": 151},
    "negative guidance": {"guidance_scale": -1},
    "guidance too high": {"guidance_scale": 31},
    "no images": {"num_images": 0},
    "too many images": {"num_images": 9},
    "seed above 2^32-1": {"seed": MAX_SEED + 1},
    "negative seed": {"seed": -1},
    "prompt too long": {"prompt": "x" * 2001},
    "blank prompt": {"prompt": "   "},
    "unknown field": {"sampler": "euler"},
    "unknown scheduler": {"scheduler": "magic"},
    "unknown format": {"output_format": "gif"},
    "webhook not http": {"webhook_url": "ftp://example.com/x"},
    "model with whitespace": {"model": "org/my model"},
    "model path traversal": {"model": "/models/../etc"},
    "too much metadata": {"metadata": {f"k{i}": "v" for i in range(17)}},
    "metadata value too long": {"metadata": {"k": "v" * 513}},
}


@pytest.mark.parametrize("fields", BAD.values(), ids=BAD.keys())
def test_bad_requests_are_refused_with_the_field_named(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        JobRequest.model_validate({"prompt": "a cat", **fields})
    named = {str(e["loc"][0]) for e in info.value.errors() if e["loc"]}
    assert named & set(fields) or "area" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_guidance_must_be_finite(value: float) -> None:
    with pytest.raises(ValidationError):
        JobRequest(prompt="a cat", guidance_scale=value)


def test_defaults_and_resolution_record_model_and_seed() -> None:
    request = JobRequest(prompt="a cat")
    assert (request.width, request.height, request.steps, request.num_images) == (512, 512, 30, 1)
    resolved = request.resolved("tiny")
    assert resolved.model == "tiny" and resolved.seed is not None and 0 <= resolved.seed <= MAX_SEED
    assert JobRequest(prompt="a cat", seed=7, model="org/m").resolved("tiny").seed == 7
    assert JobRequest(prompt="a cat", seed=7, model="org/m").resolved("tiny").model == "org/m"


def test_accepted_model_references() -> None:
    for model in (
        "tiny",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "org/name@main",
        "/models/sd15",
        "s3://bucket/models/sd15",
    ):
        assert JobRequest(prompt="x", model=model).model == model


def test_messages_must_carry_a_resolved_request() -> None:
    with pytest.raises(ValidationError):
        JobMessage(job_id=new_job_id(), request=JobRequest(prompt="a cat"))
    with pytest.raises(ValidationError):
        JobMessage(job_id="../../etc", request=JobRequest(prompt="a cat").resolved("tiny"))
    message = JobMessage(job_id=new_job_id(), request=JobRequest(prompt="a cat").resolved("tiny"))
    assert JobMessage.model_validate(message.model_dump(mode="json")) == message


def test_status_terminality_and_output_keys() -> None:
    assert [s.value for s in JobStatus if s.is_terminal] == ["succeeded", "failed", "canceled"]
    assert output_key("ab" * 16, 2, OutputFormat.JPEG) == f"jobs/{'ab' * 16}/2.jpg"
