"""`check_expiry`: the one lifetime rule every backend's `presign_get` applies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from storage import MAX_EXPIRY, InvalidExpiryError, check_expiry
from storage.expiry import describe_duration


@pytest.mark.parametrize(
    ("expires_in", "seconds"),
    [(timedelta(seconds=1), 1), (timedelta(hours=1), 3600), (timedelta(seconds=90.9), 90), (MAX_EXPIRY, 604800)],
)
def test_returns_whole_seconds(expires_in: timedelta, seconds: int) -> None:
    assert check_expiry(expires_in) == seconds


def test_too_long_names_both_limits() -> None:
    with pytest.raises(InvalidExpiryError) as raised:
        check_expiry(timedelta(days=8))
    assert str(raised.value) == "expires_in must be at most 7 days (604800 s); got 8 days"


def test_one_second_past_the_maximum_is_refused() -> None:
    with pytest.raises(InvalidExpiryError, match="got 604801 s"):
        check_expiry(MAX_EXPIRY + timedelta(seconds=1))


def test_a_tighter_maximum_applies() -> None:
    with pytest.raises(InvalidExpiryError, match=r"at most 1 hour \(3600 s\); got 2 hours"):
        check_expiry(timedelta(hours=2), timedelta(hours=1))


@pytest.mark.parametrize("expires_in", [timedelta(0), timedelta(seconds=-5), timedelta(microseconds=999_999)], ids=str)
def test_less_than_a_second_is_refused(expires_in: timedelta) -> None:
    with pytest.raises(InvalidExpiryError, match="at least 1 second"):
        check_expiry(expires_in)


@pytest.mark.parametrize("expires_in", [3600, 3600.0, "1h", None])
def test_non_timedelta_is_refused(expires_in: Any) -> None:
    with pytest.raises(InvalidExpiryError, match=r"datetime\.timedelta"):
        check_expiry(expires_in)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(days=1), "1 day"),
        (timedelta(hours=36), "36 hours"),
        (timedelta(minutes=90), "90 minutes"),
        (timedelta(seconds=61), "61 s"),
        (timedelta(seconds=1.5), "1.5 s"),
        (timedelta(0), "0 s"),
        (timedelta(hours=-1), "-1 hour"),
    ],
)
def test_describe_duration_uses_the_largest_exact_unit(duration: timedelta, text: str) -> None:
    assert describe_duration(duration) == text
