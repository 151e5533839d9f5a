"""Query parameter types that take only their documented form: no silent coercion of a surprising value.

Pydantic's lax mode turns `day=0` into 1970-01-01 and `day=1e9` into a date in 2001; an API parameter documented as
`YYYY-MM-DD` should refuse them (422) instead of answering for a day nobody asked about.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from pydantic import BeforeValidator

_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_day_text(value: object) -> object:
    if isinstance(value, str) and not _ISO_DAY.fullmatch(value):
        raise ValueError("must be a day written YYYY-MM-DD")
    return value


#: A UTC day, accepted only as `YYYY-MM-DD` (then checked as a real date: 2024-02-30 is refused too).
IsoDay = Annotated[date, BeforeValidator(_iso_day_text)]

_WHOLE = re.compile(r"[0-9]{1,18}")


def _whole_text(value: object) -> object:
    if isinstance(value, str) and not _WHOLE.fullmatch(value):
        raise ValueError("must be a whole number written in digits")
    return value


def _bool_text(value: object) -> object:
    if isinstance(value, str):
        if value not in ("true", "false"):
            raise ValueError("must be true or false")
        return value == "true"
    return value


#: A count or offset in a query: digits only (lax parsing would take `1.0`, ` 5`, `+5` and `1_000`).
QueryInt = Annotated[int, BeforeValidator(_whole_text)]
#: A flag in a query: `true` or `false` (lax parsing would take `yes`, `on`, `1`, `t`, `y` and their opposites).
QueryBool = Annotated[bool, BeforeValidator(_bool_text)]
