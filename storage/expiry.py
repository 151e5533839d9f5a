"""The one rule for presigned-URL lifetimes, shared by every backend's `presign_get`."""

from __future__ import annotations

from datetime import timedelta

from storage.base import MAX_EXPIRY
from storage.errors import InvalidExpiryError

_MIN_EXPIRY = timedelta(seconds=1)
_UNITS = ((timedelta(days=1), "day"), (timedelta(hours=1), "hour"), (timedelta(minutes=1), "minute"))


def check_expiry(expires_in: timedelta, maximum: timedelta = MAX_EXPIRY) -> int:
    """Return `expires_in` in whole seconds (rounded down); raise `InvalidExpiryError` unless 1 s ≤ it ≤ `maximum`.

    The message names both limits, e.g. "expires_in must be at most 7 days (604800 s); got 8 days".
    """
    if not isinstance(expires_in, timedelta):
        raise InvalidExpiryError(f"expires_in must be a datetime.timedelta; got {type(expires_in).__name__}")
    if expires_in < _MIN_EXPIRY:
        raise InvalidExpiryError(f"expires_in must be at least 1 second; got {describe_duration(expires_in)}")
    if expires_in > maximum:
        raise InvalidExpiryError(
            f"expires_in must be at most {describe_duration(maximum)} ({int(maximum.total_seconds())} s); "
            f"got {describe_duration(expires_in)}"
        )
    return int(expires_in.total_seconds())


def describe_duration(duration: timedelta) -> str:
    """`duration` in the largest unit that states it exactly: "8 days", "90 minutes", "1.5 s", "-1 hour"."""
    if duration < timedelta(0):
        return f"-{describe_duration(-duration)}"
    if duration == timedelta(0):
        return "0 s"
    for unit, name in _UNITS:
        count, rest = divmod(duration, unit)
        if not rest:
            return f"{count} {name}{'' if count == 1 else 's'}"
    return f"{duration.total_seconds():g} s"
