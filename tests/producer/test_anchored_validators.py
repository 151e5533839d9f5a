"""Every validator matches the whole value: Python's `$` also matches before a final newline, so `tiny\n` or a
token with a trailing newline got through. Python patterns use fullmatch; pydantic's `pattern=` runs on
pydantic-core's Rust regex engine, where `$` is the end of the text (pinned here, since switching to the
Python engine would bring the bug back)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from producer.apikeys import token_key_id, valid_tenant
from producer.jobs import BatchRequest, ImageRef, JobRequest, is_job_id, is_upload_id
from producer.webhooks.ssrf import literal_address
from tests.support import make_app

TOKEN = "sdq_0123456789abcdef_" + "A" * 40


def test_python_validators_refuse_a_trailing_newline() -> None:
    assert is_job_id("0" * 32) and not is_job_id("0" * 32 + "\n")
    assert valid_tenant("acme") and not valid_tenant("acme\n")
    assert token_key_id(TOKEN) == "0123456789abcdef" and token_key_id(TOKEN + "\n") is None
    assert literal_address("127.1") is not None and literal_address("127.1\n") is None


@pytest.mark.parametrize("field", ["model", "lora"])
def test_model_and_lora_names_refuse_a_trailing_newline(field: str) -> None:
    def request(name: str) -> JobRequest:
        if field == "model":
            return JobRequest(prompt="x", model=name)
        return JobRequest.model_validate({"prompt": "x", "loras": [{"name": name}]})

    assert request("org/name")
    for bad in ("org/name\n", "tiny\n", "/models/x\n"):
        with pytest.raises(ValidationError):
            request(bad)


def test_image_inputs_and_adapter_models_refuse_a_trailing_newline() -> None:
    assert is_upload_id("0" * 32) and not is_upload_id("0" * 32 + "\n")
    assert ImageRef.model_validate("https://example.com/a.png")
    with pytest.raises(ValidationError):
        ImageRef.model_validate("https://example.com/a.png\n")
    image = "data:image/png;base64,AAAA"

    def job(field: str, model: str) -> JobRequest:
        unit = {"model": model, "image": image}
        return JobRequest.model_validate({"prompt": "x", field: [unit] if field == "controlnets" else unit})

    for field in ("controlnets", "ip_adapter"):
        assert job(field, "org/name")
        with pytest.raises(ValidationError):
            job(field, "org/name\n")


def test_pydantic_patterns_refuse_a_trailing_newline() -> None:
    assert JobRequest(prompt="x", webhook_url="https://example.com/hook")
    with pytest.raises(ValidationError):
        JobRequest(prompt="x", webhook_url="https://example.com/hook\n")
    with pytest.raises(ValidationError):
        BatchRequest(items=[{"prompt": "x"}], webhook_url="https://example.com/hook\n")


@pytest.mark.redis
def test_query_patterns_refuse_a_trailing_newline(redis_server: str, tmp_path: Path) -> None:
    with TestClient(make_app(redis_server, tmp_path, auth=False)) as http:
        assert http.get("/v1/jobs", params={"cursor": "12"}).status_code == 200
        assert http.get("/v1/jobs", params={"cursor": "12\n"}).status_code == 422
        assert http.post("/v1/hooks/jobs", params={"key_id": "0" * 16 + "\n"}).status_code == 422
