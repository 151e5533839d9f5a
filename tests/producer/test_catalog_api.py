"""The model catalog at submission, over real HTTP (`sdq api` on a real Redis, no worker): a request outside its
model's limits is a 422 naming the field with nothing enqueued; omitted fields get the model's defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import redis

from producer import Client
from producer.client import ApiError
from tests.support import Stack, start_stack

pytestmark = pytest.mark.redis

QUEUE = "dramatiq:sdq-generate"


@pytest.fixture(scope="module")
def stack(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("catalog-api")
    # The built-in catalog, and only its models.
    running = start_stack(tmp, redis_server, tmp / "models", SDQ_ALLOWED_MODELS="@catalog")
    yield running
    running.stop()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=10) as client:
        yield client


def _queued(redis_server: str) -> tuple[int, int]:
    client = redis.Redis.from_url(redis_server)
    return client.llen(QUEUE), client.zcard("sdq:jobs")


FLUX_REFUSED = {
    "ddim": ({"scheduler": "ddim"}, "scheduler", "allowed: default, dpmpp_2m, euler, unipc"),
    "negative prompt": ({"negative_prompt": "blurry"}, "negative_prompt", "does not use a negative prompt"),
    "guidance": ({"guidance_scale": 7.5}, "guidance_scale", "takes no guidance scale"),
    "side not a multiple of 16": ({"width": 1000}, "width", "multiple of 16"),
    "too many steps": ({"steps": 50}, "steps", "1–16 steps"),
    "refiner": ({"refiner": {"model": "sdxl-refiner"}}, "refiner", "only SDXL models"),
}


@pytest.mark.parametrize(("fields", "field", "accepted"), FLUX_REFUSED.values(), ids=FLUX_REFUSED.keys())
def test_a_flux_request_outside_its_limits_is_a_422_naming_the_field(
    http: httpx.Client, redis_server: str, fields: dict[str, object], field: str, accepted: str
) -> None:
    before = _queued(redis_server)
    response = http.post("/v1/jobs", json={"prompt": "a fox", "model": "flux-schnell", **fields})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [f["field"] for f in error["fields"]] == [field]
    assert accepted in error["fields"][0]["message"] and "'flux-schnell'" in error["fields"][0]["message"]
    assert _queued(redis_server) == before


def test_omitted_fields_get_the_models_defaults(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", json={"prompt": "a fox", "model": "flux-schnell", "seed": 1})
    assert response.status_code == 202, response.text
    request = response.json()["request"]
    assert (request["width"], request["height"], request["steps"], request["guidance_scale"]) == (1024, 1024, 4, 0.0)
    given = http.post("/v1/jobs", json={"prompt": "a fox", "model": "flux-schnell", "steps": 2, "width": 512}).json()
    assert (given["request"]["steps"], given["request"]["width"], given["request"]["height"]) == (2, 512, 1024)


def test_a_job_naming_no_model_is_the_default_tiny_one_as_before(http: httpx.Client) -> None:
    request = http.post("/v1/jobs", json={"prompt": "a fox"}).json()["request"]
    assert request["model"] == "tiny"
    assert (request["width"], request["height"], request["steps"], request["guidance_scale"]) == (512, 512, 30, 7.5)
    assert request["scheduler"] == "default"


def test_only_the_catalogs_models_are_served(http: httpx.Client, redis_server: str) -> None:
    before = _queued(redis_server)
    response = http.post("/v1/jobs", json={"prompt": "a fox", "model": "org/not-listed"})
    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert fields[0]["field"] == "model" and "flux-schnell" in fields[0]["message"]
    assert _queued(redis_server) == before


def test_a_batch_item_outside_its_limits_names_the_item_and_field(http: httpx.Client, redis_server: str) -> None:
    before = _queued(redis_server)
    items = [{"prompt": "a fox"}, {"prompt": "a cat", "model": "flux-dev", "scheduler": "pndm"}]
    response = http.post("/v1/batches", json={"items": items})
    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["items.1.scheduler"]
    assert _queued(redis_server) == before


def test_batch_items_get_their_models_defaults_under_the_batchs_own(http: httpx.Client, stack: Stack) -> None:
    body = {"items": [{"prompt": "a fox", "model": "sdxl"}, {"prompt": "a cat"}], "defaults": {"steps": 12}}
    created = http.post("/v1/batches", json=body)
    assert created.status_code == 202, created.text
    with stack.client() as sdk:
        sdxl, tiny = (sdk.get(job_id).request for job_id in created.json()["job_ids"])
    assert (sdxl.width, sdxl.steps, sdxl.guidance_scale) == (1024, 12, 5.0)
    assert (tiny.width, tiny.steps, tiny.guidance_scale) == (512, 12, 7.5)


def test_the_sdk_sends_only_what_the_caller_gave(stack: Stack) -> None:
    with stack.client() as sdk:
        record = sdk.submit("a fox", model="sdxl", steps=20)
    assert (record.request.width, record.request.steps, record.request.guidance_scale) == (1024, 20, 5.0)
    with Client(stack.api_url) as sdk, pytest.raises(ApiError) as caught:
        sdk.submit("a fox", model="flux-dev", scheduler="ddim")
    assert caught.value.status == 422 and [f["field"] for f in caught.value.fields] == ["scheduler"]


def _data_url() -> str:
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 200)).save(png, format="PNG")
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()


IMAGE_REFUSED = {
    "flux image-to-image": ("flux-schnell", {"image": "IMG"}, "image", "not take image inputs here yet"),
    "sd3 controlnet": (
        "sd35-medium",
        {"controlnets": [{"model": "lllyasviel/sd-controlnet-canny", "image": "IMG"}]},
        "controlnets",
        "not take image inputs here yet",
    ),
    "sd3 ip-adapter": (
        "sd35-medium",
        {"ip_adapter": {"model": "h94/IP-Adapter", "image": "IMG"}},
        "ip_adapter",
        "not take image inputs here yet",
    ),
    "sdxl refiner with an image": (
        "sdxl",
        {"image": "IMG", "refiner": {"model": "sdxl-refiner"}},
        "refiner",
        "does not combine with image inputs",
    ),
}


@pytest.mark.parametrize(("model", "fields", "field", "said"), IMAGE_REFUSED.values(), ids=IMAGE_REFUSED.keys())
def test_an_image_mode_its_model_cannot_run_is_a_422_naming_the_field_at_submission(
    http: httpx.Client, redis_server: str, model: str, fields: dict[str, object], field: str, said: str
) -> None:
    image = {"url": _data_url()}
    body = json.loads(json.dumps(fields).replace('"IMG"', json.dumps(image)))
    before = _queued(redis_server)
    response = http.post("/v1/jobs", json={"prompt": "a fox", "model": model, **body})
    assert response.status_code == 422, response.text
    fields_named = response.json()["error"]["fields"]
    assert [f["field"] for f in fields_named] == [field] and said in fields_named[0]["message"], fields_named
    assert _queued(redis_server) == before


def _unit(model: str) -> dict[str, object]:
    return {"model": model, "image": {"url": _data_url()}, "preprocess": "canny"}


def test_a_controlnet_and_ip_adapter_the_model_lists_are_accepted_by_name(http: httpx.Client) -> None:
    body = {"prompt": "a fox", "model": "tiny", "controlnets": [_unit("canny")]}
    body["ip_adapter"] = {"model": "tiny-ip-adapter", "image": {"url": _data_url()}}
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    request = response.json()["request"]
    # The record keeps the catalog name, as it does for `model`; the worker loads its source.
    assert request["controlnets"][0]["model"] == "canny" and request["ip_adapter"]["model"] == "tiny-ip-adapter"
    sd15 = http.post("/v1/jobs", json={"prompt": "a fox", "model": "sd15", "controlnets": [_unit("depth")]})
    assert sd15.status_code == 202, sd15.text


ADAPTER_REFUSED = {
    "a name tiny does not list": ("tiny", {"controlnets": [_unit("depth")]}, "controlnets.0.model", "tiny-controlnet"),
    "another family's controlnet": (
        "tiny",
        {"controlnets": [_unit("canny"), _unit("tiny-sdxl-controlnet")]},
        "controlnets.1.model",
        "'tiny' takes the ControlNets tiny-controlnet, canny;",
    ),
    "a hub id under @catalog": ("sdxl", {"controlnets": [_unit("org/cn")]}, "controlnets.0.model", "canny, depth"),
    # (A model listing no IP-Adapter takes none: tests/producer/test_catalog.py; every built-in SD model lists one.)
    "a raw ip-adapter hub id under @catalog": (
        "sd15",
        {"ip_adapter": {"model": "h94/IP-Adapter", "image": "IMG"}},
        "ip_adapter.model",
        "'sd15' takes the IP-Adapters ip-adapter, ip-adapter-plus; 'h94/IP-Adapter' is not one of them",
    ),
}


@pytest.mark.parametrize(("model", "fields", "field", "said"), ADAPTER_REFUSED.values(), ids=ADAPTER_REFUSED.keys())
def test_a_controlnet_or_ip_adapter_the_model_does_not_list_is_a_422_naming_the_field(
    http: httpx.Client, redis_server: str, model: str, fields: dict[str, object], field: str, said: str
) -> None:
    body = json.loads(json.dumps(fields).replace('"IMG"', json.dumps({"url": _data_url()})))
    before = _queued(redis_server)
    response = http.post("/v1/jobs", json={"prompt": "a fox", "model": model, **body})
    assert response.status_code == 422, response.text
    named = response.json()["error"]["fields"]
    assert [f["field"] for f in named] == [field] and said in named[0]["message"], named
    assert _queued(redis_server) == before


def test_a_batch_item_with_an_unlisted_controlnet_names_the_item_and_field(
    http: httpx.Client, redis_server: str
) -> None:
    before = _queued(redis_server)
    items = [{"prompt": "a fox", "controlnets": [_unit("canny")]}, {"prompt": "a cat", "controlnets": [_unit("x")]}]
    response = http.post("/v1/batches", json={"items": items})
    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["items.1.controlnets.0.model"]
    assert _queued(redis_server) == before


def test_the_models_list_shows_each_models_controlnets_and_ip_adapters(http: httpx.Client) -> None:
    answer = http.get("/v1/models").json()
    assert answer["default_model"] == "tiny"  # what "server default" runs: the dashboard shows its lists
    listed = {model["name"]: model for model in answer["models"]}
    assert listed["sdxl"]["controlnets"]["canny"] == "diffusers/controlnet-canny-sdxl-1.0"
    assert listed["tiny"]["controlnets"] == {"tiny-controlnet": "tiny-controlnet", "canny": "tiny-controlnet"}
    assert listed["tiny-sdxl"]["ip_adapters"] == {
        "tiny-sdxl-ip-adapter": "tiny-sdxl-ip-adapter",
        "tiny-sdxl-ip-adapter-plus": "tiny-sdxl-ip-adapter-plus",
    }
    assert listed["flux-dev"]["controlnets"] == {} and listed["flux-dev"]["ip_adapters"] == {}
    assert listed["sd15"]["ip_adapters"] == {
        "ip-adapter": "h94/IP-Adapter/models/ip-adapter_sd15.safetensors",
        "ip-adapter-plus": "h94/IP-Adapter/models/ip-adapter-plus_sd15.safetensors",
    }


def test_sdq_models_prints_each_models_controlnet_and_ip_adapter_names(stack: Stack) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "producer.cli", "models"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    header, *lines = printed.splitlines()
    assert header.split() == ["MODEL", "FAMILY", "HELD", "DEFAULTS", "CONTROLNETS", "IP-ADAPTERS", "SOURCE"]
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows["tiny"][-3:] == ["tiny-controlnet,canny", "tiny-ip-adapter,tiny-ip-adapter-plus", "tiny"]
    assert rows["sd15"][-3:-1] == ["canny,depth,openpose,canny-v1", "ip-adapter,ip-adapter-plus"]
    assert rows["flux-dev"][-3:-1] == ["-", "-"]
