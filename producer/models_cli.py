"""`sdq models`: the server's model catalog, and which models some worker holds loaded or cached."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .holdings import ModelInfo, ModelList


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print `GET /v1/models` as it is.")] = False,
) -> None:
    """List the models clients may name, with their defaults, and where a worker holds them."""
    from .cli import _client

    with _client() as client:
        listed = client.models()
    sys.stdout.write(listed.model_dump_json(indent=2) + "\n" if as_json else render(listed))


def render(listed: ModelList) -> str:
    """One line per model: name, family, where it is, its defaults, its ControlNet and IP-Adapter names, its
    source."""
    rows = [("MODEL", "FAMILY", "HELD", "DEFAULTS", "CONTROLNETS", "IP-ADAPTERS", "SOURCE")]
    rows += [
        (m.name, m.family.value, _held(m), _defaults(m), _names(m.controlnets), _names(m.ip_adapters), m.source)
        for m in listed.models
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    widths[-1] = 0  # the last column is not padded
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines) + "\n"


def _held(model: ModelInfo) -> str:
    if model.loaded:
        return f"loaded ({model.loaded_workers})"
    if model.cached:
        return f"cached ({model.cached_workers})"
    return "-"


def _defaults(model: ModelInfo) -> str:
    if model.refiner:
        return "refiner"
    d = model.defaults
    return f"{d.value('width')}x{d.value('height')} {d.value('steps')} steps cfg {d.value('guidance_scale'):g}"


def _names(listed: dict[str, str]) -> str:
    return ",".join(listed) or "-"
