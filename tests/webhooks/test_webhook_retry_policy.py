"""The retry schedule: about a day of attempts with jitter, and `Retry-After` as a lower bound with a cap."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from producer.webhooks.delivery import RetryPolicy, parse_retry_after
from producer.webhooks.settings import WebhookSettings


def test_the_default_schedule_spans_about_a_day_in_seven_attempts() -> None:
    schedule = WebhookSettings().webhook_retry_schedule_s
    assert schedule == [0, 5, 300, 1800, 7200, 18000, 36000]
    assert 17 * 3600 < sum(schedule) < 24 * 3600


def test_delays_carry_jitter_within_bounds_and_the_schedule_ends() -> None:
    policy, rng = RetryPolicy([0, 5, 300], jitter=0.1), random.Random(1)
    delays = [policy.delay_s(1, None, rng) for _ in range(200)]
    assert all(d is not None and 4.5 <= d <= 5.5 for d in delays) and len(set(delays)) > 100
    assert policy.delay_s(0, None, rng) == 0
    assert policy.delay_s(3, None, rng) is None


def test_retry_after_is_a_lower_bound_and_is_capped() -> None:
    policy, rng = RetryPolicy([0, 5, 300], jitter=0, max_retry_after_s=600), random.Random(1)
    assert policy.delay_s(1, 60, rng) == 60  # the receiver asks for longer than the schedule: honoured
    assert policy.delay_s(2, 60, rng) == 300  # shorter than the schedule: the schedule wins
    assert policy.delay_s(1, 10**9, rng) == 600  # absurd values are capped


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    now = time.time()
    assert parse_retry_after("120") == 120
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now_s=now) == pytest.approx(90, abs=1.5)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now_s=now) == 0
    for junk in (None, "", "soon", "-5", "1.5e9x"):
        assert parse_retry_after(junk) is None
