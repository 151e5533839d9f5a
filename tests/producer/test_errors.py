"""Each producer error carries the HTTP status and the stable error code the API answers it with."""

from __future__ import annotations

import inspect

import pytest

from producer import errors
from producer.api.errors import ERROR_RESPONSES

#: The wire contract: clients branch on these codes.
EXPECTED = {
    errors.ConfigurationError: (500, "internal"),  # a start-up error: met while serving, it is a bug
    errors.JobNotFoundError: (404, "not_found"),
    errors.BatchNotFoundError: (404, "not_found"),
    errors.QueueUnavailableError: (503, "unavailable"),
    errors.OutcomeUnknownError: (503, "outcome_unknown"),  # sent, unanswered: retry with the same Idempotency-Key
    errors.ModelNotAllowedError: (422, "validation_error"),
    errors.SourceNotAllowedError: (422, "validation_error"),
    errors.ModelLimitError: (422, "validation_error"),
    errors.CatalogError: (503, "unavailable"),
    errors.WebhookUrlError: (422, "validation_error"),
    errors.InvalidInputError: (422, "validation_error"),
    errors.JobConflictError: (409, "conflict"),
    errors.AuthenticationError: (401, "unauthenticated"),
    errors.ForbiddenError: (403, "forbidden"),
    errors.RateLimitedError: (429, "rate_limited"),
    errors.QuotaExceededError: (429, "quota_exceeded"),
    errors.TooManyStreamsError: (429, "too_many_streams"),
    errors.IdempotencyConflictError: (422, "idempotency_key_reused"),
}


def test_every_error_class_names_its_status_and_code() -> None:
    classes = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ProducerError) and cls is not errors.ProducerError
    }
    assert classes == set(EXPECTED), "a new error needs its status and code pinned here"
    for cls, (status, code) in EXPECTED.items():
        assert (cls.status_code, cls.code) == (status, code), cls.__name__
        assert status in ERROR_RESPONSES, f"{cls.__name__}: status {status} is not documented in the OpenAPI"


def test_the_root_error_is_a_bug_answered_as_an_incident() -> None:
    assert (errors.ProducerError.status_code, errors.ProducerError.code) == (500, "internal")


def test_an_idempotency_key_still_in_use_is_a_409_to_retry() -> None:
    reused = errors.IdempotencyConflictError("other body")
    running = errors.IdempotencyConflictError("still running", in_progress=True)
    assert (reused.status_code, reused.code, reused.client_headers()) == (422, "idempotency_key_reused", None)
    assert reused.client_fields() == [{"field": "Idempotency-Key", "message": "other body"}]
    assert (running.status_code, running.code, running.client_fields()) == (409, "idempotency_in_progress", None)
    assert running.client_headers() == {"Retry-After": "1"}


@pytest.mark.parametrize(("retry_after_s", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (30.0, "30")])
def test_retry_after_is_whole_seconds_rounded_up(retry_after_s: float, header: str) -> None:
    for cls in (errors.RateLimitedError, errors.QuotaExceededError):
        assert cls("slow down", retry_after_s=retry_after_s).client_headers() == {"Retry-After": header}


def test_the_queue_error_keeps_its_cause_out_of_the_message() -> None:
    error = errors.QueueUnavailableError("redis://10.0.0.5:6379 refused")
    assert "10.0.0.5" not in error.client_message()
    assert error.client_headers() == {"Retry-After": "5"}


def test_a_not_found_message_echoes_a_long_id_cut_short() -> None:
    assert str(errors.JobNotFoundError("a" * 32)) == f"no job {'a' * 32!r}"
    long = str(errors.BatchNotFoundError("b" * 10_000))
    assert len(long) < 120 and long.endswith("… (10000 characters)")
