"""infra_templates/ parsed: each Terraform folder as a `Module` of its blocks, and helpers to read them.

Shared by the template tests (one module per cloud, plus the boot scripts, Kubernetes and the linters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "infra_templates"
CLOUDS = ("aws", "azure", "gcp")
#: The worker's default SDQ_IDLE_TIMEOUT_S, which every template must keep.
IDLE_TIMEOUT_S = 900


def _unquote(value: Any) -> Any:
    # python-hcl2 >= 7 keeps the quotes of string literals and keys; older versions drop them.
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(node, list):
        return [_clean(item) for item in node]
    return _unquote(node)


def bare(expr: Any) -> Any:
    """`${x}` → `x` (how python-hcl2 versions differ on bare expressions)."""
    if isinstance(expr, str) and expr.startswith("${") and expr.endswith("}") and expr.count("${") == 1:
        return expr[2:-1]
    return expr


class Module:
    """Every top-level block of one Terraform folder, keyed by type and name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.data: dict[str, dict[str, dict[str, Any]]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.text = ""
        for path in sorted(folder.glob("*.tf")):
            self.text += path.read_text()
            with path.open() as handle:
                parsed = _clean(hcl2.load(handle))
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for block in parsed.get(kind, []):
                    for type_, named in block.items():
                        target.setdefault(type_, {}).update(named)
            for block in parsed.get("variable", []):
                self.variables.update(block)
            for block in parsed.get("locals", []):
                self.locals.update(block)

    def resource(self, type_: str, name: str) -> dict[str, Any]:
        assert name in self.resources.get(type_, {}), f"{self.folder.name}: no {type_}.{name}"
        return self.resources[type_][name]

    def all(self, type_: str) -> dict[str, dict[str, Any]]:
        return self.resources.get(type_, {})

    def default(self, variable: str) -> Any:
        return self.variables[variable]["default"]


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The first (usually only) nested block `name`."""
    found = body.get(name)
    assert found, f"missing block {name!r}"
    first: dict[str, Any] = found[0] if isinstance(found, list) else found
    return first


def ignored_changes(body: dict[str, Any]) -> list[str]:
    lifecycle = body.get("lifecycle") or [{}]
    return [bare(item) for item in lifecycle[0].get("ignore_changes", [])]
