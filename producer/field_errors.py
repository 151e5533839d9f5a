"""Pydantic validation errors as the API names them: `{"field": "items.3.width", "message": "..."}`.

The API's 422 bodies, batch validation and the CLI all report a pydantic error by a dotted path to the field and
pydantic's message; this is the one place that conversion lives.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


def field_path(error: Mapping[str, Any], *, prefix: str = "", drop: Collection[str] = (), default: str = "body") -> str:
    """The error's location as a dotted path (`metadata.key`), under `prefix`, without the `drop` parts (FastAPI's
    `body`/`query`/`path` roots); `default` when nothing is left (an error about the whole input)."""
    parts = [prefix] if prefix else []
    parts += [str(part) for part in error.get("loc", ()) if part not in drop]
    return ".".join(parts) or default


def field_message(error: Mapping[str, Any]) -> str:
    """Pydantic's message without the `Value error, ` that it puts before the text of a validator's ValueError."""
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def field_error(error: Mapping[str, Any], *, prefix: str = "", drop: Collection[str] = ()) -> dict[str, str]:
    """One pydantic error (an item of `ValidationError.errors()`) as `{"field", "message"}`."""
    if error.get("type") == "json_invalid":  # pydantic's own text names a character offset, not what to do
        return {"field": "body", "message": "request body is not valid JSON"}
    return {"field": field_path(error, prefix=prefix, drop=drop), "message": field_message(error)}
