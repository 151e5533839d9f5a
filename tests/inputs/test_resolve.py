"""Resolving a job's inputs: fetched once from a real origin (loopback, allow-listed as a development host would
be), decoded, checked, normalized and kept in a real local store; every later resolution reads the store alone."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from producer.errors import InvalidInputError
from producer.inputs import InputLimits
from producer.inputs.resolve import InputSources, resolve_inputs
from producer.jobs import JobRequest, input_object_key, new_job_id, upload_object_key
from producer.webhooks.ssrf import UrlPolicy
from storage import LocalStore
from tests.inputs.images import bomb_png, data_url, gradient_png, noise_png, png, truncated
from tests.inputs.origin import Answer, Origin, origin

LOOPBACK = UrlPolicy.from_entries(["127.0.0.1/32"], https_only=False)
UPLOAD_ID = "c" * 32


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


@pytest.fixture
def site() -> Iterator[Origin]:
    with origin() as running:
        yield running


def _sources(store: LocalStore, **limits: int) -> InputSources:
    return InputSources(store, InputLimits(**limits), LOOPBACK)


def _request(**fields: object) -> JobRequest:
    return JobRequest.model_validate({"prompt": "a cat", "width": 64, "height": 64, **fields}).resolved("tiny")


def _stored(store: LocalStore, job_id: str, name: str) -> Image.Image:
    return Image.open(io.BytesIO(store.get(input_object_key(job_id, name))))


def test_inputs_are_fetched_once_and_read_back_from_storage_ever_after(store: LocalStore, site: Origin) -> None:
    site.answers["/photo.png"] = Answer(gradient_png(128, 96))
    site.answers["/pose.jpg"] = Answer(_jpeg(gradient_png(64, 64)), "image/jpeg")
    store.put(upload_object_key(UPLOAD_ID), png(128, 96, color=(255,), mode="L"), content_type="image/png")
    request = _request(
        image=site.url("/photo.png"),
        mask_image={"upload": UPLOAD_ID},
        controlnets=[{"model": "org/canny", "image": site.url("/pose.jpg"), "preprocess": "canny"}],
        ip_adapter={"model": "org/ipa", "image": data_url(png(32, 48, color=(1, 2, 3, 0), mode="RGBA"))},
    )
    job_id = new_job_id()

    first = resolve_inputs(job_id, request, _sources(store))

    assert first.fetched == {"image", "mask", "controlnet-0", "ip-adapter"}
    assert (first["image"].size, first["image"].mode) == ((64, 64), "RGB")
    assert (first["mask"].size, first["mask"].mode) == ((64, 64), "L")
    assert first["controlnet-0"].size == (64, 64)
    assert first["ip-adapter"].size == (32, 32) and first["ip-adapter"].getpixel((0, 0)) == (255, 255, 255)
    assert (site.count("/photo.png"), site.count("/pose.jpg")) == (1, 1)
    assert site.requests[0][1]["host"] == f"127.0.0.1:{site.port}"

    # The origin goes away and the upload expires: a retry, a resume or a hand-off does not notice.
    store.delete(upload_object_key(UPLOAD_ID))
    site.answers.clear()
    for _ in range(2):
        again = resolve_inputs(job_id, request, _sources(store))
        assert again.fetched == frozenset()
        assert {name: image.tobytes() for name, image in again.images.items()} == {
            name: image.tobytes() for name, image in first.images.items()
        }
    assert len(site.requests) == 2


def test_normalizing_turns_upright_flattens_alpha_and_covers_the_job_size(store: LocalStore) -> None:
    # 40×80 stored, EXIF orientation 6 (rotate 90° clockwise to view): upright it is 80×40.
    sideways = Image.new("RGB", (40, 80), (0, 0, 255))
    sideways.paste((255, 0, 0), (0, 0, 40, 40))  # red on the top half as stored: on the right once upright
    exif = sideways.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    sideways.save(buffer, format="JPEG", exif=exif, quality=95)
    mask = Image.new("LA", (80, 40), (255, 0))
    mask.paste((255, 255), (0, 0, 40, 40))  # opaque white on the left: repaint; transparent on the right: keep
    request = _request(
        width=128, height=64, image=data_url(buffer.getvalue(), "image/jpeg"), mask_image=data_url(_png(mask))
    )

    resolved = resolve_inputs(new_job_id(), request, _sources(store))

    image, mask_out = resolved["image"], resolved["mask"]
    assert image.size == (128, 64) and mask_out.size == (128, 64)
    red, _, blue = image.getpixel((120, 32))
    assert red > 200 and blue < 60  # the red half ended up on the right: the orientation was applied
    assert mask_out.getpixel((8, 32)) == 255 and mask_out.getpixel((120, 32)) == 0


def test_a_reference_image_is_cropped_to_the_central_square_its_encoder_sees(store: LocalStore) -> None:
    # CLIP's processor scales the shorter side to 224 and center-crops: a 16384×1 reference kept whole would be
    # scaled to 3.7 million × 224 pixels there. Cropped here, the encoder gets exactly what it would have seen.
    thirds = Image.new("RGB", (300, 100), (255, 0, 0))
    thirds.paste((0, 255, 0), (100, 0, 200, 100))
    thirds.paste((0, 0, 255), (200, 0, 300, 100))
    line = png(16384, 1)
    for reference, side, colors in ((_png(thirds), 100, [(100 * 100, (0, 255, 0))]), (line, 1, [(1, (200, 30, 30))])):
        job_id = new_job_id()

        resolved = resolve_inputs(
            job_id, _request(ip_adapter={"model": "o/ipa", "image": data_url(reference)}), _sources(store)
        )

        assert resolved["ip-adapter"].size == (side, side) and resolved["ip-adapter"].getcolors() == colors
        assert _stored(store, job_id, "ip-adapter").size == (side, side)


BAD_ORIGINS = {
    "bomb": (Answer(bomb_png()), "decompression bomb"),
    "over the pixel cap": (Answer(bomb_png(5000)), "over the limit of"),
    "truncated": (Answer(truncated(gradient_png(128, 128))), "corrupt or truncated"),
    "html": (Answer(b"<html>", "text/html"), "not one of image/png"),
    "not found": (Answer(b"gone", "text/plain", 404), "answered 404"),
    "redirect": (Answer(b"", "text/plain", 302, {"Location": "http://169.254.169.254/"}), "not followed"),
    "declared too big": (Answer(noise_png(64, 64)), "over the limit of 4096"),
    "chunked too big": (Answer(noise_png(64, 64), chunked=True), "over the limit of 4096 bytes"),
}


@pytest.mark.parametrize(("answer", "says"), BAD_ORIGINS.values(), ids=BAD_ORIGINS.keys())
def test_a_bad_origin_is_an_invalid_input_naming_the_field_and_stores_nothing(
    store: LocalStore, site: Origin, answer: Answer, says: str
) -> None:
    site.answers["/x.png"] = answer
    request = _request(controlnets=[{"model": "org/cn", "image": site.url("/x.png")}])

    with pytest.raises(InvalidInputError) as info:
        resolve_inputs(new_job_id(), request, _sources(store, max_upload_bytes=4096))

    assert info.value.field == "controlnets.0.image.url" and says in info.value.reason, info.value.reason
    assert info.value.error_code == "invalid_input"
    assert not list(store.list("inputs/"))


def test_an_unreachable_origin_is_an_invalid_input(store: LocalStore) -> None:
    with origin() as stopped:
        dead = stopped.url("/x.png")  # nothing listens there once the origin stopped
    with pytest.raises(InvalidInputError, match="unreachable") as info:
        resolve_inputs(new_job_id(), _request(image=dead), _sources(store))
    assert info.value.field == "image.url"


def test_a_mask_of_another_size_than_its_image_fails_before_anything_is_stored(store: LocalStore, site: Origin) -> None:
    site.answers["/photo.png"] = Answer(png(64, 64))
    request = _request(image=site.url("/photo.png"), mask_image=data_url(png(64, 56, color=(255,), mode="L")))

    with pytest.raises(InvalidInputError) as info:
        resolve_inputs(new_job_id(), request, _sources(store))

    assert info.value.field == "mask_image" and "64×64" in info.value.reason and "64×56" in info.value.reason
    assert not list(store.list("inputs/"))


def test_an_expired_upload_and_a_bad_uploaded_file_are_invalid_inputs(store: LocalStore) -> None:
    with pytest.raises(InvalidInputError, match="is gone"):
        resolve_inputs(new_job_id(), _request(image={"upload": UPLOAD_ID}), _sources(store))
    store.put(upload_object_key(UPLOAD_ID), bomb_png(), content_type="image/png")
    with pytest.raises(InvalidInputError, match="decompression bomb") as info:
        resolve_inputs(new_job_id(), _request(image={"upload": UPLOAD_ID}), _sources(store))
    assert info.value.field == "image.upload"
    store.put(upload_object_key(UPLOAD_ID), noise_png(64, 64), content_type="image/png")  # bigger than allowed
    with pytest.raises(InvalidInputError, match="over the limit of 2048"):
        resolve_inputs(new_job_id(), _request(image={"upload": UPLOAD_ID}), _sources(store, max_upload_bytes=2048))


def _jpeg(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_job_never_claimed_skips_the_look_for_stored_copies(store: LocalStore) -> None:
    """The worker passes `never_claimed` when the job's record counts no attempt: no image was made from a stored
    copy yet, so the origin is asked without a storage read first, and what it gives is stored again. Once an
    attempt has begun, the stored copies win."""
    store.put(upload_object_key(UPLOAD_ID), png(64, 64, color=(9, 9, 9)), content_type="image/png")
    request = _request(image={"upload": UPLOAD_ID})
    job_id = new_job_id()
    reads: list[str] = []
    get, get_at_most = store.get, store.get_at_most

    def counted(key: str) -> bytes:
        reads.append(key)
        return get(key)

    def counted_at_most(key: str, max_bytes: int) -> bytes:  # how an upload is read (`storage.get_at_most`)
        reads.append(key)
        return get_at_most(key, max_bytes)

    store.get = counted  # type: ignore[method-assign]
    store.get_at_most = counted_at_most  # type: ignore[method-assign]
    first = resolve_inputs(job_id, request, _sources(store), never_claimed=True)
    assert first.fetched == {"image"} and reads == [upload_object_key(UPLOAD_ID)]  # the upload, nothing else
    assert store.head(input_object_key(job_id, "image")).size > 0  # stored for the attempts after
    reads.clear()
    store.put(upload_object_key(UPLOAD_ID), png(64, 64, color=(200, 9, 9)), content_type="image/png")
    again = resolve_inputs(job_id, request, _sources(store))  # an attempt has begun: the stored copy
    assert again.fetched == frozenset() and reads == [input_object_key(job_id, "image")]
    assert again["image"].tobytes() == first["image"].tobytes()


def test_an_https_input_is_fetched_once_even_when_the_job_went_back_before_its_claim(
    store: LocalStore, site: Origin
) -> None:
    """A spot notice or a stopping executor hands a prepared job's message back before its claim: the record still
    counts no attempt, and the next preparation finds the fetched copy instead of asking the origin again."""
    site.answers["/photo.png"] = Answer(gradient_png(64, 64))
    request = _request(image=site.url("/photo.png"), mask_image=data_url(png(64, 64, color=(255,), mode="L")))
    job_id = new_job_id()

    first = resolve_inputs(job_id, request, _sources(store), never_claimed=True)
    again = resolve_inputs(job_id, request, _sources(store), never_claimed=True)

    assert first.fetched == {"image", "mask"} and again.fetched == {"mask"}  # the data URL is in the message
    assert site.count("/photo.png") == 1
    assert again["image"].tobytes() == first["image"].tobytes()
