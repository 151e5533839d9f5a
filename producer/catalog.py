"""The model catalog: the names clients use (`sdxl`, `flux-schnell`), what each loads, its defaults and limits.

`SDQ_MODEL_CATALOG` names a YAML or JSON file (`producer/catalog.yaml`, the built-in one, shows the shape); the API
and every worker read the same file. At submission a request for a catalog model gets the model's defaults in the
fields it omitted (`model_fields_set`: a field the client gave, even at the request's own default, is kept), then is
checked against the model's limits and its family's rules (`producer.families`): a Flux job with `scheduler: ddim`
is a 422 naming `scheduler` and what the model accepts, not a failed job. A model the catalog does not name passes
as it is (the worker checks it against what it loads), unless `SDQ_ALLOWED_MODELS` says otherwise
(`@catalog`: the catalog's names). On the worker a catalog name resolves to its `source`.

A model may list the ControlNets and IP-Adapters it takes (`controlnets`, `ip_adapters`: the names clients use →
sources, as for models). For a catalog model they decide: a listed name (or its source) is accepted and the worker
loads its source; a model that lists none takes none; a bare name it does not list is refused. A raw source it
does not list (a hub id, a path, a storage URL) passes to the source policy, as a raw `model` does, unless
`SDQ_ALLOWED_MODELS` holds `@catalog`, which binds adapters to the lists too. Each refusal is a 422 naming the
field (`controlnets.0.model`, `ip_adapter.model`) and what the model takes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from functools import cache, cached_property
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from .errors import CatalogError, ModelLimitError
from .families import FAMILY_RULES, FamilyRules, Problem, family_problems
from .field_errors import field_error
from .jobs import MAX_AREA_PX, MAX_GUIDANCE, MAX_SIDE_PX, MAX_STEPS, MIN_SIDE_PX, Family, JobRequest, Scheduler, Side
from .jobs.requests import _model_ref

#: In `SDQ_ALLOWED_MODELS`: every name of the catalog (no model reference starts with `@`).
CATALOG_TOKEN = "@catalog"
#: A catalog name: short and bare, so it can never be mistaken for a hub id, a path or a URL.
CatalogName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
#: A model, ControlNet or IP-Adapter source: a hub id, an absolute path, a storage URL or a tiny model.
ModelSource = Annotated[str, AfterValidator(_model_ref)]
#: The kinds of adapter a model lists: (catalog field, what a message calls one).
_ADAPTER_KINDS = (("controlnets", "ControlNet"), ("ip_adapters", "IP-Adapter"))
_BARE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DEFAULTED = ("width", "height", "steps", "guidance_scale", "scheduler")
_REQUEST = JobRequest.model_fields


class ModelDefaults(BaseModel):
    """What a request for the model gets in the fields it omits; unset here: the request's own default."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    width: Side | None = None
    height: Side | None = None
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=MAX_GUIDANCE)
    scheduler: Scheduler | None = None

    def value(self, name: str) -> Any:
        """The default of field `name`: this model's, else the request's own."""
        mine = getattr(self, name)
        return _REQUEST[name].default if mine is None else mine


class ModelLimits(BaseModel):
    """What a request for the model may ask for, within the request's own bounds and its family's rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_side: int = Field(default=MIN_SIDE_PX, ge=MIN_SIDE_PX, le=MAX_SIDE_PX)
    max_side: int = Field(default=MAX_SIDE_PX, ge=MIN_SIDE_PX, le=MAX_SIDE_PX)
    max_area: int = Field(default=MAX_AREA_PX, ge=MIN_SIDE_PX**2, le=MAX_AREA_PX)
    min_steps: int = Field(default=1, ge=1, le=MAX_STEPS)
    max_steps: int = Field(default=MAX_STEPS, ge=1, le=MAX_STEPS)
    #: A subset of the family's schedulers; unset: all of them.
    schedulers: frozenset[Scheduler] | None = None
    #: False: a request with a negative prompt is refused (unset: the family's rule; true cannot override it).
    negative_prompt: bool | None = None
    #: False: the model ignores the guidance scale (FLUX.1 schnell), so a request giving another one is refused.
    guidance: bool | None = None


class CatalogModel(BaseModel):
    """One model of the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: ModelSource = Field(
        description="What the worker loads: a hub id, an absolute path, a storage prefix or a tiny model."
    )
    family: Family
    description: str = ""
    refiner: bool = Field(default=False, description="An SDXL refiner: only a job's `refiner.model`.")
    defaults: ModelDefaults = Field(default_factory=ModelDefaults)
    limits: ModelLimits = Field(default_factory=ModelLimits)
    controlnets: dict[CatalogName, ModelSource] = Field(
        default_factory=dict, description="The ControlNets it takes: the names clients use → what the worker loads."
    )
    ip_adapters: dict[CatalogName, ModelSource] = Field(
        default_factory=dict, description="The IP-Adapters it takes: the names clients use → what the worker loads."
    )

    @cached_property
    def rules(self) -> FamilyRules:
        """The family's rules, narrowed by this model's limits."""
        rules, limits = FAMILY_RULES[self.family], self.limits
        return dataclasses.replace(
            rules,
            schedulers=rules.schedulers & limits.schedulers if limits.schedulers is not None else rules.schedulers,
            negative_prompt=rules.negative_prompt and limits.negative_prompt is not False,
            guidance=rules.guidance and limits.guidance is not False,
        )

    @model_validator(mode="after")
    def _consistent(self) -> CatalogModel:
        family, limits = FAMILY_RULES[self.family], self.limits
        if limits.schedulers is not None and not limits.schedulers <= family.schedulers:
            extra = ", ".join(sorted(s.value for s in limits.schedulers - family.schedulers))
            raise ValueError(f"limits.schedulers: {self.family.value} models cannot use {extra}")
        if limits.negative_prompt and not family.negative_prompt:
            raise ValueError(f"limits.negative_prompt: {self.family.value} models take no negative prompt")
        if limits.min_side > limits.max_side or limits.min_steps > limits.max_steps:
            raise ValueError("limits: a minimum is above its maximum")
        if self.refiner and self.family is not Family.SDXL:
            raise ValueError("refiner: only SDXL models have refiners")
        for field, what in _ADAPTER_KINDS:
            if getattr(self, field) and (self.refiner or not family.image_inputs):
                kind = "refiners" if self.refiner else f"{self.family.value} models"
                raise ValueError(f"{field}: {kind} take no {what} here (SD 1.x/2.x and SDXL models do)")
        # The defaults must be a request the model accepts.
        defaults = self._filled(JobRequest(prompt="defaults"))
        problems = family_problems(self.rules, defaults) + self._limit_problems(defaults, "this model", frozenset())
        if problems:
            raise ValueError(f"defaults.{problems[0]}")
        return self

    def apply(self, name: str, request: JobRequest, *, listed_adapters_only: bool = False) -> JobRequest:
        """`request` with this model's defaults in the fields it omitted; raises `ModelLimitError` naming every
        field the model cannot serve. `listed_adapters_only`: a ControlNet or IP-Adapter source this model does not
        list is refused too (see the module doc)."""
        if self.refiner:
            raise ModelLimitError([Problem("model", f"{name!r} is a refiner: name it as an SDXL job's refiner.model")])
        filled = self._filled(request)
        problems = family_problems(self.rules, filled, model=name)
        problems += self._limit_problems(filled, repr(name), request.model_fields_set)
        if self.rules.image_inputs:  # otherwise the family's problem already names the field
            problems += self._adapter_problems(filled, repr(name), listed_adapters_only)
        if problems:
            raise ModelLimitError(problems)
        return filled

    def adapter_source(self, kind: str, ref: str) -> str:
        """What the worker loads for the ControlNet (`kind` "controlnets") or IP-Adapter ("ip_adapters") `ref`:
        a listed name's source, any other reference as it is."""
        listed: dict[str, str] = getattr(self, kind)
        return listed.get(ref, ref)

    def _adapter_problems(self, request: JobRequest, who: str, listed_only: bool) -> list[Problem]:
        asked = {
            "controlnets": [(f"controlnets.{i}.model", unit.model) for i, unit in enumerate(request.controlnets)],
            "ip_adapters": [("ip_adapter.model", request.ip_adapter.model)] if request.ip_adapter else [],
        }
        problems = []
        for kind, what in _ADAPTER_KINDS:
            listed: dict[str, str] = getattr(self, kind)
            for field, ref in asked[kind]:
                if not listed:
                    problems.append(Problem(field, f"{who} takes no {what}: the catalog lists none for it"))
                elif ref not in listed and ref not in listed.values() and (listed_only or _BARE_NAME.fullmatch(ref)):
                    names = ", ".join(listed)
                    problems.append(Problem(field, f"{who} takes the {what}s {names}; {ref!r} is not one of them"))
        return problems

    def _filled(self, request: JobRequest) -> JobRequest:
        given = request.model_fields_set
        update = {field: self.defaults.value(field) for field in _DEFAULTED if field not in given}
        update = {field: value for field, value in update.items() if value != getattr(request, field)}
        return request.model_copy(update=update) if update else request

    def _limit_problems(self, request: JobRequest, who: str, given: frozenset[str] | set[str]) -> list[Problem]:
        limits, rules = self.limits, self.rules
        problems = []
        for side in ("width", "height"):
            value = getattr(request, side)
            if not limits.min_side <= value <= limits.max_side:
                bounds = f"{limits.min_side}–{limits.max_side}"
                problems.append(Problem(side, f"{who} takes {bounds} px a side (got {value})"))
        area = request.width * request.height
        if area > limits.max_area and not any(p.field in ("width", "height") for p in problems):
            size = f"{request.width}×{request.height}"
            problems.append(Problem("height", f"{who} takes at most {limits.max_area} px (got {size} = {area})"))
        if not limits.min_steps <= request.steps <= limits.max_steps:
            bounds = f"{limits.min_steps}–{limits.max_steps}"
            problems.append(Problem("steps", f"{who} takes {bounds} steps (got {request.steps})"))
        default_guidance = self.defaults.value("guidance_scale")
        if not rules.guidance and "guidance_scale" in given and request.guidance_scale != default_guidance:
            problems.append(Problem("guidance_scale", f"{who} takes no guidance scale; omit it"))
        return problems


class Catalog(BaseModel):
    """Every model of the catalog, by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[CatalogName, CatalogModel]

    def get(self, name: str | None) -> CatalogModel | None:
        """The model named `name`, or None for a name the catalog does not have."""
        return self.models.get(name) if name else None

    def source_of(self, model: str) -> str:
        """What the worker loads for `model`: a catalog name's source, any other reference as it is."""
        entry = self.models.get(model)
        return entry.source if entry is not None else model

    def adapter_source(self, model: str, kind: str, ref: str) -> str:
        """What the worker loads for a job of `model` naming the ControlNet (`kind` "controlnets") or IP-Adapter
        ("ip_adapters") `ref`: the name's source in `model`'s list, any other reference as it is."""
        entry = self.models.get(model)
        return entry.adapter_source(kind, ref) if entry is not None else ref

    def apply(self, request: JobRequest, *, listed_adapters_only: bool = False) -> JobRequest:
        """`request` (its model resolved) with its catalog model's defaults and checked against its limits and
        adapter lists; a model the catalog does not have passes as it is. Raises `ModelLimitError`."""
        entry = self.get(request.model)
        if entry is not None:
            request = entry.apply(str(request.model), request, listed_adapters_only=listed_adapters_only)
        refiner = request.refiner.model if request.refiner is not None else None
        refiner_entry = self.get(refiner)
        if refiner_entry is not None and not refiner_entry.refiner:
            raise ModelLimitError([Problem("refiner.model", f"{refiner!r} is not a refiner")])
        return request

    def allowed(self, models: list[str]) -> frozenset[str]:
        """`SDQ_ALLOWED_MODELS` as a set of names, `@catalog` standing for every catalog name."""
        names = set(models)
        if CATALOG_TOKEN in names:
            names.discard(CATALOG_TOKEN)
            names |= set(self.models)
        return frozenset(names)


def builtin_catalog_text() -> str:
    """The built-in catalog, as YAML."""
    return files("producer").joinpath("catalog.yaml").read_text(encoding="utf-8")


def load_catalog(path: Path | None) -> Catalog:
    """The catalog in `path` (`SDQ_MODEL_CATALOG`: `.json`, else YAML), or the built-in one; raises `CatalogError`
    naming the file and the first thing wrong in it."""
    return _read_catalog(path) if path is not None else _builtin_catalog()


@cache
def _builtin_catalog() -> Catalog:
    return _read_catalog(None)  # read once per process: every JobService made without a catalog shares it


def _read_catalog(path: Path | None) -> Catalog:
    import yaml

    where = str(path) if path is not None else "the built-in catalog"
    try:
        text = path.read_text(encoding="utf-8") if path is not None else builtin_catalog_text()
        data = json.loads(text) if path is not None and path.suffix == ".json" else yaml.safe_load(text)
        return Catalog.model_validate(data)
    except OSError as exc:
        raise CatalogError(f"SDQ_MODEL_CATALOG={where}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise CatalogError(f"SDQ_MODEL_CATALOG={where}: {_first_problem(exc)}; fix the file") from None


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = field_error(exc.errors()[0])
        return f"{error['field']}: {error['message']}"
    return re.sub(r"\s+", " ", str(exc)).strip()
