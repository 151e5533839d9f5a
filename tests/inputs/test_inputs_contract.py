"""The image fields of the wire contract: what they accept, what they refuse (naming the field), and that a
text-only request serializes exactly as it did before they existed."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from producer.jobs import (
    DEFAULT_INPAINT_STRENGTH,
    DEFAULT_STRENGTH,
    ImageRef,
    JobMessage,
    JobRequest,
    input_object_key,
    new_job_id,
)
from tests.inputs.images import data_url, png

#: The fields image inputs added; none may appear in a text-only request's JSON (records, messages, hashes).
INPUT_FIELDS = {"image", "strength", "mask_image", "controlnets", "ip_adapter"}
UPLOAD = {"upload": "a" * 32}


def test_a_text_only_request_serializes_exactly_as_before() -> None:
    request = JobRequest(prompt="a cat")
    text = request.model_dump_json()
    assert not INPUT_FIELDS & set(json.loads(text))
    assert text == request.model_dump_json(exclude=INPUT_FIELDS)  # what it was before the fields existed
    assert JobRequest.model_validate_json(text) == request
    assert request.model_dump(mode="json") == json.loads(text)  # the dict form (batches, messages) too
    assert not request.has_inputs and request.input_images() == []


def test_every_image_field_round_trips_through_a_message() -> None:
    request = JobRequest(
        prompt="a cat",
        image=UPLOAD,
        strength=0.4,
        mask_image={"url": "https://example.com/mask.png"},
        controlnets=[{"model": "org/canny", "image": "https://example.com/p.jpg", "preprocess": "canny"}],
        ip_adapter={"model": "org/ipa", "image": UPLOAD, "scale": 0.5},
    ).resolved("tiny")
    message = JobMessage(job_id=new_job_id(), request=request)

    assert JobMessage.model_validate_json(message.model_dump_json()) == message
    assert [(path, name) for path, name, _ in request.input_images()] == [
        ("image", "image"),
        ("mask_image", "mask"),
        ("controlnets.0.image", "controlnet-0"),
        ("ip_adapter.image", "ip-adapter"),
    ]
    assert request.controlnets[0].image == ImageRef(url="https://example.com/p.jpg")  # a bare string is a URL


def test_strength_defaults_only_where_it_is_used() -> None:
    assert JobRequest(prompt="x", image=UPLOAD).effective_strength == DEFAULT_STRENGTH
    assert JobRequest(prompt="x", image=UPLOAD).resolved("tiny").strength is None  # single and batch jobs alike
    assert JobRequest(prompt="x", image=UPLOAD, strength=0).effective_strength == 0
    # Inpainting repaints the masked area from noise unless told otherwise (diffusers' own default there).
    inpaint = JobRequest(prompt="x", image=UPLOAD, mask_image=UPLOAD)
    assert inpaint.effective_strength == DEFAULT_INPAINT_STRENGTH == 1.0 and inpaint.strength is None
    assert JobRequest(prompt="x", image=UPLOAD, mask_image=UPLOAD, strength=0.5).effective_strength == 0.5


def test_a_data_url_is_decoded_into_its_type_and_bytes() -> None:
    ref = ImageRef.model_validate(data_url(png(), "image/png"))
    assert ref.kind == "data" and ref.inline() == ("image/png", png())
    assert ImageRef(upload="b" * 32).kind == "upload" and ImageRef(url="https://x.example/a.png").kind == "url"
    assert input_object_key("j" * 32, "mask") == f"inputs/{'j' * 32}/mask.png"


def test_a_data_url_in_any_case_is_one_as_rfc_2397_reads_it() -> None:
    shouted = "DATA:Image/PNG;BASE64," + data_url(png(), "image/png").split(",", 1)[1]
    ref = ImageRef.model_validate(shouted)
    assert ref.kind == "data" and ref.inline() == ("image/png", png())


def test_the_pixel_limit_stays_within_pillows_own_which_refuses_first() -> None:
    from PIL import Image
    from pydantic import ValidationError

    from producer.inputs.limits import PILLOW_MAX_IMAGE_PIXELS, InputSettings

    assert PILLOW_MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS
    assert InputSettings(max_image_pixels=PILLOW_MAX_IMAGE_PIXELS).max_image_pixels == PILLOW_MAX_IMAGE_PIXELS
    with pytest.raises(ValidationError, match="max_image_pixels"):
        InputSettings(max_image_pixels=PILLOW_MAX_IMAGE_PIXELS + 1)


BAD = {
    "strength without an image": ({"strength": 0.5}, "strength"),
    "strength above 1": ({"image": UPLOAD, "strength": 1.5}, "strength"),
    "mask without an image": ({"mask_image": UPLOAD}, "mask_image"),
    "neither upload nor url": ({"image": {}}, "image"),
    "both upload and url": ({"image": {**UPLOAD, "url": "https://a.example/x"}}, "image"),
    "unknown key": ({"image": {"path": "/etc/passwd"}}, "image.path"),
    "malformed upload id": ({"image": {"upload": "../../x"}}, "image.upload"),
    "ftp url": ({"image": {"url": "ftp://example.com/a.png"}}, "image.url"),
    "file url": ({"image": "file:///etc/passwd"}, "image.url"),
    "data url of another type": ({"image": "data:text/html;base64,PGgxPg=="}, "image.url"),
    "data url not base64": ({"image": "data:image/png;base64,@@@"}, "image.url"),
    "four controlnets": ({"controlnets": [{"model": "m", "image": UPLOAD}] * 4}, "controlnets"),
    "controlnet without image": ({"controlnets": [{"model": "m"}]}, "controlnets.0.image"),
    "controlnet image bad": ({"controlnets": [{"model": "m", "image": "gopher://x"}]}, "controlnets.0.image.url"),
    "controlnet end before start": (
        {"controlnets": [{"model": "m", "image": UPLOAD, "guidance_start": 0.6, "guidance_end": 0.5}]},
        "controlnets.0.guidance_end",
    ),
    "unknown preprocessor": ({"controlnets": [{"model": "m", "image": UPLOAD, "preprocess": "x"}]}, "controlnets.0"),
    "controlnet model traversal": ({"controlnets": [{"model": "/m/../etc", "image": UPLOAD}]}, "controlnets.0.model"),
    "ip adapter scale": ({"ip_adapter": {"model": "m", "image": UPLOAD, "scale": -1}}, "ip_adapter.scale"),
    "ip adapter image": ({"ip_adapter": {"model": "m", "image": {"upload": 7}}}, "ip_adapter.image.upload"),
}


@pytest.mark.parametrize(("fields", "named"), BAD.values(), ids=BAD.keys())
def test_bad_image_fields_are_refused_naming_the_field(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobRequest.model_validate({"prompt": "a cat", **fields})
    locations = [".".join(str(part) for part in error["loc"]) for error in info.value.errors()]
    assert any(location.startswith(named) for location in locations), locations
