"""The model catalog: reading it, its defaults (only where a request is silent), its limits, its family rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from producer.catalog import CATALOG_TOKEN, Catalog, load_catalog
from producer.errors import CatalogError, ModelLimitError
from producer.families import FAMILY_RULES, Family
from producer.jobs import JobRequest, Scheduler

HOUSE = """
models:
  house-flux:
    source: s3://models/flux-dev
    family: flux
    defaults: {width: 768, height: 768, steps: 20, guidance_scale: 3.5, scheduler: euler}
    limits: {max_side: 1024, max_steps: 30, schedulers: [default, euler]}
  tiny:
    source: tiny
    family: sd
"""


@pytest.fixture(scope="module")
def builtin() -> Catalog:
    return load_catalog(None)


def _fields(exc: pytest.ExceptionInfo[ModelLimitError]) -> dict[str, str]:
    return {field["field"]: field["message"] for field in exc.value.client_fields()}


def test_the_builtin_catalog_names_every_family_and_the_tiny_models(builtin: Catalog) -> None:
    expected = {"sd15", "sdxl", "sdxl-refiner", "sd35-medium", "sd35-large", "flux-schnell", "flux-dev"}
    assert expected | {"tiny", "tiny-sdxl", "tiny-sdxl-refiner", "tiny-sd3", "tiny-flux"} == set(builtin.models)
    assert builtin.source_of("sdxl") == "stabilityai/stable-diffusion-xl-base-1.0"
    assert builtin.source_of("org/not-in-the-catalog") == "org/not-in-the-catalog"
    assert {entry.family for entry in builtin.models.values()} == {Family.SD, Family.SDXL, Family.SD3, Family.FLUX}


def test_defaults_fill_only_the_fields_a_request_omits(builtin: Catalog) -> None:
    filled = builtin.apply(JobRequest(prompt="a fox", model="flux-schnell"))
    assert (filled.width, filled.height, filled.steps, filled.guidance_scale) == (1024, 1024, 4, 0.0)
    # Given at the request's own default values, they are still the client's choice.
    given = builtin.apply(JobRequest(prompt="a fox", model="sdxl", width=512, height=512, steps=30))
    assert (given.width, given.height, given.steps, given.guidance_scale) == (512, 512, 30, 5.0)


def test_the_default_tiny_model_runs_exactly_as_without_a_catalog(builtin: Catalog) -> None:
    for request in (JobRequest(prompt="a fox", model="tiny"), JobRequest(prompt="a fox", model="tiny", steps=3)):
        assert builtin.apply(request) == request


@pytest.mark.parametrize(
    ("fields", "field", "accepted"),
    [
        ({"scheduler": "ddim"}, "scheduler", "allowed: default, dpmpp_2m, euler, unipc"),
        ({"negative_prompt": "blurry"}, "negative_prompt", "leave it empty"),
        ({"guidance_scale": 7.0}, "guidance_scale", "omit it"),
        ({"width": 1000}, "width", "multiple of 16"),
        ({"steps": 40}, "steps", "1–16 steps"),
        ({"refiner": {"model": "sdxl-refiner"}}, "refiner", "only SDXL models"),
    ],
)
def test_a_flux_schnell_request_outside_its_limits_names_the_field(
    builtin: Catalog, fields: dict[str, object], field: str, accepted: str
) -> None:
    with pytest.raises(ModelLimitError) as caught:
        builtin.apply(JobRequest(prompt="a fox", model="flux-schnell", **fields))  # type: ignore[arg-type]
    assert list(_fields(caught)) == [field] and accepted in _fields(caught)[field]
    assert "'flux-schnell'" in _fields(caught)[field]


def test_every_problem_of_a_request_is_named_at_once(builtin: Catalog) -> None:
    with pytest.raises(ModelLimitError) as caught:
        builtin.apply(JobRequest(prompt="a fox", model="sd15", width=1536, steps=140, scheduler=Scheduler.DDIM))
    assert set(_fields(caught)) == {"width"}  # sd15 takes every scheduler and up to 150 steps
    with pytest.raises(ModelLimitError) as caught:
        builtin.apply(JobRequest(prompt="a fox", model="flux-dev", width=1000, scheduler=Scheduler.PNDM))
    assert set(_fields(caught)) == {"scheduler", "width"}


def test_refiners_are_only_refiners(builtin: Catalog) -> None:
    with pytest.raises(ModelLimitError) as caught:
        builtin.apply(JobRequest(prompt="a fox", model="sdxl-refiner"))
    assert "refiner.model" in _fields(caught)["model"]
    with pytest.raises(ModelLimitError) as caught:
        builtin.apply(JobRequest(prompt="a fox", model="sdxl", refiner={"model": "sd15"}))  # type: ignore[arg-type]
    assert list(_fields(caught)) == ["refiner.model"]
    refined = builtin.apply(JobRequest(prompt="a fox", model="sdxl", refiner={"model": "sdxl-refiner"}))  # type: ignore[arg-type]
    assert refined.width == 1024


def test_a_model_outside_the_catalog_passes_as_it_is(builtin: Catalog) -> None:
    request = JobRequest(prompt="a fox", model="org/other", scheduler=Scheduler.DDIM)
    assert builtin.apply(request) is request


def _controlled(model: str, controlnet: str | None = None, ip_adapter: str | None = None) -> JobRequest:
    image = {"url": "https://example.com/c.png"}
    return JobRequest.model_validate(
        {
            "prompt": "a fox",
            "model": model,
            "controlnets": [{"model": controlnet, "image": image}] if controlnet else [],
            "ip_adapter": {"model": ip_adapter, "image": image} if ip_adapter else None,
        }
    )


def test_the_builtin_catalog_lists_each_image_models_controlnets_and_ip_adapters(builtin: Catalog) -> None:
    assert builtin.models["sd15"].controlnets["canny"] == "lllyasviel/control_v11p_sd15_canny"
    assert builtin.models["sdxl"].controlnets["canny"] == "diffusers/controlnet-canny-sdxl-1.0"
    assert builtin.adapter_source("tiny", "controlnets", "canny") == "tiny-controlnet"
    assert builtin.adapter_source("tiny-sdxl", "ip_adapters", "tiny-sdxl-ip-adapter") == "tiny-sdxl-ip-adapter"
    # Outside a model's list (or the catalog), a reference is its own source, as for `model`.
    assert builtin.adapter_source("tiny", "controlnets", "org/cn") == "org/cn"
    assert builtin.adapter_source("org/model", "ip_adapters", "canny") == "canny"
    assert not any(entry.controlnets or entry.ip_adapters for entry in builtin.models.values() if entry.refiner)


def test_a_controlnet_or_ip_adapter_its_model_does_not_list_is_refused_naming_the_field(builtin: Catalog) -> None:
    assert builtin.apply(_controlled("tiny", "canny", "tiny-ip-adapter")).controlnets[0].model == "canny"
    assert builtin.apply(_controlled("sd15", "lllyasviel/control_v11p_sd15_canny")).model == "sd15"  # its source
    with pytest.raises(ModelLimitError) as caught:
        builtin.apply(_controlled("tiny", "depth", "tiny-sdxl-ip-adapter"))
    fields = _fields(caught)
    said = "'tiny' takes the ControlNets tiny-controlnet, canny; 'depth' is not one of them"
    assert fields["controlnets.0.model"] == said
    assert "'tiny' takes the IP-Adapters tiny-ip-adapter, tiny-ip-adapter-plus;" in fields["ip_adapter.model"]
    # A model that lists no IP-Adapter takes none, not even a hub id (sd15 as a catalog without its list has it).
    bare = builtin.model_copy(
        update={"models": {**builtin.models, "sd15": builtin.models["sd15"].model_copy(update={"ip_adapters": {}})}}
    )
    with pytest.raises(ModelLimitError) as caught:
        bare.apply(_controlled("sd15", ip_adapter="h94/IP-Adapter"))
    assert _fields(caught) == {"ip_adapter.model": "'sd15' takes no IP-Adapter: the catalog lists none for it"}
    # The built-in sd15 takes h94's SD 1.5 IP-Adapter by name, loaded from inside the hub repository.
    assert builtin.apply(_controlled("sd15", ip_adapter="ip-adapter")).ip_adapter.model == "ip-adapter"
    assert (
        builtin.adapter_source("sd15", "ip_adapters", "ip-adapter")
        == "h94/IP-Adapter/models/ip-adapter_sd15.safetensors"
    )


def test_a_raw_adapter_source_passes_unless_the_catalog_binds_adapters(builtin: Catalog) -> None:
    # Open: a hub id the model does not list goes to the source policy, as a raw `model` does.
    request = _controlled("tiny", "org/cn", "org/ipa")
    assert builtin.apply(request) is request
    with pytest.raises(ModelLimitError) as caught:  # `@catalog`: only the lists
        builtin.apply(request, listed_adapters_only=True)
    assert set(_fields(caught)) == {"controlnets.0.model", "ip_adapter.model"}
    assert builtin.apply(_controlled("tiny", "canny"), listed_adapters_only=True).controlnets[0].model == "canny"
    # A model outside the catalog: as before, whatever it names.
    outside = _controlled("org/model", "anything", "org/ipa")
    assert builtin.apply(outside, listed_adapters_only=True) is outside


def test_a_catalog_file_replaces_the_builtin_one_in_yaml_or_json(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(HOUSE)
    catalog = load_catalog(tmp_path / "models.yaml")
    (tmp_path / "models.json").write_text(json.dumps(catalog.model_dump(mode="json")))
    assert load_catalog(tmp_path / "models.json") == catalog
    assert set(catalog.models) == {"house-flux", "tiny"} and catalog.source_of("house-flux") == "s3://models/flux-dev"
    filled = catalog.apply(JobRequest(prompt="a fox", model="house-flux"))
    assert (filled.width, filled.steps, filled.scheduler) == (768, 20, Scheduler.EULER)
    with pytest.raises(ModelLimitError) as caught:  # the family takes unipc; this model's limits do not
        catalog.apply(JobRequest(prompt="a fox", model="house-flux", scheduler=Scheduler.UNIPC))
    assert "allowed: default, euler" in _fields(caught)["scheduler"]
    assert catalog.allowed([CATALOG_TOKEN, "org/extra"]) == {"house-flux", "tiny", "org/extra"}
    assert catalog.allowed([]) == frozenset()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "models: {x: {source: tiny, family: sd, limits: {schedulers: [ddim]}, defaults: {scheduler: pndm}}}",
            "defaults.scheduler: sd models cannot use 'pndm' (allowed: ddim)",
        ),
        ("models: {x: {source: tiny, family: flux, limits: {schedulers: [ddim]}}}", "flux models cannot use ddim"),
        ("models: {x: {source: tiny, family: flux, limits: {negative_prompt: true}}}", "no negative prompt"),
        ("models: {x: {source: tiny, family: flux, defaults: {width: 520}}}", "defaults.width"),
        ("models: {x: {source: tiny, family: sd3, refiner: true}}", "only SDXL models have refiners"),
        ("models: {'org/x': {source: tiny, family: sd}}", "models.org/x"),
        ("models: {x: {source: 'bad source', family: sd}}", "source"),
        ("models: {x: {source: tiny, family: kandinsky}}", "family"),
        ("models: [unclosed", "expected"),
        ("models: {x: {source: tiny, family: flux, controlnets: {canny: org/cn}}}", "controlnets: flux models take"),
        ("models: {x: {source: tiny, family: sdxl, refiner: true, ip_adapters: {a: org/a}}}", "refiners take no"),
        ("models: {x: {source: tiny, family: sd, controlnets: {'org/cn': org/cn}}}", "controlnets.org/cn"),
        ("models: {x: {source: tiny, family: sd, ip_adapters: {a: 'bad source'}}}", "ip_adapters.a"),
    ],
)
def test_a_bad_catalog_names_the_file_and_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    message = str(caught.value)
    assert message.startswith(f"SDQ_MODEL_CATALOG={path}: ") and problem in message and "\n" not in message


def test_the_family_rules_are_the_workers_too() -> None:
    # One source of truth: gpu_worker.families builds its traits from these very objects (checked there too).
    flow = {Scheduler.DEFAULT, Scheduler.EULER, Scheduler.DPMPP_2M, Scheduler.UNIPC}
    assert FAMILY_RULES[Family.FLUX].schedulers == FAMILY_RULES[Family.SD3].schedulers == flow
    assert (FAMILY_RULES[Family.SD3].prompt_tokens, FAMILY_RULES[Family.FLUX].prompt_tokens) == (256, 512)


def test_sdq_api_with_a_bad_catalog_prints_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "producer.cli", "api", "--port", "0"],
        env={**os.environ, "SDQ_MODEL_CATALOG": str(path), "SDQ_DATA_DIR": str(tmp_path), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2  # a configuration error (issue 14: 2 = configuration, 1 = runtime)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "cannot read it" in lines[0], result.stderr
