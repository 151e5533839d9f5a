"""What a job may name as a source: its model, refiner, LoRAs, ControlNet and IP-Adapter models.

A job's references reach the worker, which reads what they name: a hub id is downloaded from the Hugging Face Hub,
a storage URL (`s3://…`, `file://…`) is listed and copied, an absolute path is read in place. So a client that may
name any reference may make a worker read any path or bucket it can reach. This policy is checked at submission,
before anything is recorded, and a refusal is a 422 naming the field (`loras.0.name`).

- `SDQ_ALLOWED_MODELS` (models, refiners, ControlNets, IP-Adapters) and `SDQ_ALLOWED_LORAS` (LoRAs) are lists of
  entries: an exact reference (`org/name`, `tiny`), a glob pattern (`myorg/*`), or a prefix ending in `/`
  (`s3://models-bucket/loras/`, `file:///srv/models/`); `@catalog` stands for every catalog model.
- A non-empty list admits only what its entries match. An empty one admits hub ids and cache names, and, when the
  policy is `strict`, no path or storage URL: those must be allow-listed. `strict` is the default wherever API keys
  are required; the open embedded default (loopback, no keys) stays `open`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .catalog import CATALOG_TOKEN, Catalog
from .errors import SourceNotAllowedError
from .jobs import JobRequest

_GLOB = frozenset("*?[")


def is_local_or_storage(ref: str) -> bool:
    """Whether `ref` names a path on the worker or a storage URL (anything the worker reads but did not choose)."""
    return ref.startswith("/") or "://" in ref


@dataclass(frozen=True)
class AllowList:
    """Allow-list entries: exact references, glob patterns and `…/` prefixes. Empty = no list."""

    exact: frozenset[str] = frozenset()
    patterns: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    #: Whether `@catalog` is an entry: then ControlNets and IP-Adapters are bound to the catalog's lists as well
    #: (`producer.catalog` checks them per model).
    catalog: bool = False

    @classmethod
    def of(cls, entries: Iterable[str], catalog: Catalog | None = None) -> AllowList:
        """The list `SDQ_ALLOWED_…` gives, `@catalog` expanded to `catalog`'s model names."""
        exact: set[str] = set()
        patterns: list[str] = []
        prefixes: list[str] = []
        catalog_entry = False
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            if entry == CATALOG_TOKEN:
                catalog_entry = True
                exact |= set(catalog.models) if catalog is not None else set()
            elif entry.endswith("/"):
                prefixes.append(entry)
            elif _GLOB & set(entry):
                patterns.append(entry)
            else:
                exact.add(entry)
        return cls(frozenset(exact), tuple(patterns), tuple(prefixes), catalog_entry)

    def __bool__(self) -> bool:
        return bool(self.exact or self.patterns or self.prefixes)

    def admits(self, ref: str) -> bool:
        """Whether an entry matches `ref` (a prefix only at a `/` boundary: `s3://b/loras/` not `s3://b/loras-x`)."""
        if ref in self.exact or any(ref.startswith(prefix) for prefix in self.prefixes):
            return True
        return any(fnmatch.fnmatchcase(ref, pattern) for pattern in self.patterns)

    def describe(self) -> str:
        """The entries, for an error message (short: the operator's names, never what a source holds)."""
        names = sorted(self.exact)[:8] + list(self.patterns) + list(self.prefixes)
        return ", ".join(repr(name) for name in names)


@dataclass(frozen=True)
class SourcePolicy:
    """The checks `check` runs on every job (see the module doc)."""

    models: AllowList = AllowList()
    loras: AllowList = AllowList()
    strict: bool = False

    def check(self, request: JobRequest, *, default_model: str) -> None:
        """Raise `SourceNotAllowedError` naming the first field whose reference this deployment refuses."""
        for field, ref, allow, listed in self._references(request, default_model):
            if allow.admits(ref):
                continue
            setting = "SDQ_ALLOWED_LORAS" if field.startswith("loras.") else "SDQ_ALLOWED_MODELS"
            if listed and allow:
                what = "an allowed LoRA" if setting == "SDQ_ALLOWED_LORAS" else "served"
                raise SourceNotAllowedError(
                    field, f"{field} {ref!r} is not {what} here; choose one of {allow.describe()} ({setting})"
                )
            if is_local_or_storage(ref) and (allow or self.strict):
                raise SourceNotAllowedError(
                    field,
                    f"{field} {ref!r}: job-supplied paths and storage URLs are refused here unless {setting}"
                    " allow-lists them",
                )

    def _references(self, request: JobRequest, default_model: str) -> Iterator[tuple[str, str, AllowList, bool]]:
        """(field, reference, its allow-list, whether that list binds hub ids too) for each source the job names.
        Refiners, ControlNets and IP-Adapters are held to the models list only for paths and storage URLs: it is
        usually a list of base models (`@catalog`), and their hub ids are downloaded like any public model."""
        yield "model", request.model or default_model, self.models, True
        if request.refiner is not None:
            yield "refiner.model", request.refiner.model, self.models, False
        for i, lora in enumerate(request.loras):
            yield f"loras.{i}.name", lora.name, self.loras, True
        for i, unit in enumerate(request.controlnets):
            yield f"controlnets.{i}.model", unit.model, self.models, False
        if request.ip_adapter is not None:
            yield "ip_adapter.model", request.ip_adapter.model, self.models, False


def policy_from(
    *, allowed_models: Iterable[str], allowed_loras: Iterable[str], strict: bool, catalog: Catalog | None
) -> SourcePolicy:
    """The policy `SDQ_ALLOWED_MODELS`, `SDQ_ALLOWED_LORAS` and `SDQ_JOB_SOURCES` describe."""
    return SourcePolicy(AllowList.of(allowed_models, catalog), AllowList.of(allowed_loras, catalog), strict)
