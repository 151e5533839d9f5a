"""Issue 17's last dashboard items against the real stack: the Fleet page lists what each worker reports, a job's
input images show as pictures, and the New job form takes an image by drag and drop or by its file input."""

from __future__ import annotations

import base64
import io
import signal
from typing import Any

import pytest
from PIL import Image

from tests.support import Stack, wait_for

from .conftest import Tab, api

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

_LOADED = "(img) => img.complete && img.naturalWidth > 0"


def _png(color: tuple[int, int, int], size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def _drop(tab: Tab, selector: str, data: bytes, name: str) -> None:
    """A real drag and drop: a File in a DataTransfer, dispatched as dragenter, dragover and drop on the zone."""
    tab.page.evaluate(
        """([selector, b64, name]) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, { type: 'image/png' }));
          const zone = document.querySelector(selector);
          for (const type of ['dragenter', 'dragover', 'drop']) {
            zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
          }
        }""",
        [selector, base64.b64encode(data).decode(), name],
    )


def test_the_fleet_page_shows_what_each_worker_reports(tab: Tab, ui_stack: Stack) -> None:
    # A second worker that retires after 10 idle minutes, beside the fixture's worker that never does.
    extra = ui_stack.start_worker(SDQ_WORKER_ID="ui-idle", SDQ_IDLE_TIMEOUT_S="600", SDQ_STATUS_INTERVAL_S="1")
    try:
        reported = wait_for(
            lambda: len(workers := api(ui_stack, "GET", "/v1/fleet/workers")["workers"]) >= 2 and workers, 120, 0.5
        )
        forever = next(w for w in reported if w["id"] != "ui-idle")
        tab.open("fleet")
        page = tab.page
        row = page.locator("tr[data-worker='ui-idle']")
        row.wait_for()
        cells = row.locator("td")
        assert "runs on cpu: no GPU to report" in row.inner_text()  # said, not zeros
        retires = row.locator("td.retires").inner_text()
        assert retires.endswith(" s") and ("min" in retires or int(retires.split()[0]) > 500), retires
        assert row.locator("td.idle").inner_text().endswith(" s")
        assert cells.nth(1).inner_text() == "cpu"
        other = page.locator(f"tr[data-worker='{forever['id']}']")
        assert other.locator("td.retires").inner_text() == "never"
        assert tab.csp_violations() == []
    finally:
        extra.send_signal(signal.SIGTERM)
        extra.wait(timeout=60)


def test_a_succeeded_jobs_input_shows_as_the_picture_it_ran_with(tab: Tab, ui_stack: Stack) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(_png((20, 90, 200), 96)).decode()
    body = {"prompt": "repaint", "width": 64, "height": 64, "steps": 2, "image": {"url": data_url}}
    job = api(ui_stack, "POST", "/v1/jobs", json=body)
    done = wait_for(lambda: (r := api(ui_stack, "GET", f"/v1/jobs/{job['id']}"))["status"] == "succeeded" and r, 120)
    [entry] = done["inputs"]
    assert entry["field"] == "image" and f"inputs/{job['id']}/image.png" in entry["url"]
    tab.open(f"job/{job['id']}")
    picture = tab.page.get_by_role("region", name="Input images").get_by_role("img")
    picture.wait_for()
    tab.page.wait_for_function(_LOADED, arg=picture.element_handle())
    # The prepared input: normalized to the job's 64×64, not the 96×96 that was sent.
    assert tab.page.evaluate("(img) => img.naturalWidth", picture.element_handle()) == 64


def test_an_image_dropped_on_the_form_is_uploaded_and_the_img2img_job_shows_it(tab: Tab, ui_stack: Stack) -> None:
    tab.open("new")
    page = tab.page
    _drop(tab, ".drop-zone[data-drop='image']", _png((240, 200, 10)), "sun.png")
    state = page.locator("#f-image-state")
    state.filter(has_text="uploaded").wait_for()
    upload = state.inner_text().split("(upload ")[1].rstrip(").")
    thumb = page.get_by_role("img", name="Input image: sun.png")
    page.wait_for_function(_LOADED, arg=thumb.element_handle())
    page.get_by_label("Prompt", exact=True).fill("a yellow field")
    for label, value in (("Width", "64"), ("Height", "64"), ("Steps", "4"), ("Strength", "0.5")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_function("() => location.hash.startsWith('#/job/')")
    job_id = page.evaluate("location.hash").removeprefix("#/job/")
    record: dict[str, Any] = api(ui_stack, "GET", f"/v1/jobs/{job_id}")
    assert record["request"]["image"] == {"upload": upload} and record["request"]["strength"] == 0.5
    page.locator(".job-head .badge", has_text="succeeded").wait_for(timeout=120_000)
    section = page.get_by_role("region", name="Input images")
    assert section.locator("figcaption").inner_text() == f"image (upload {upload})"
    picture = section.get_by_role("img")
    page.wait_for_function(_LOADED, arg=picture.element_handle())
    assert tab.csp_violations() == []


def test_the_file_input_takes_an_image_by_keyboard_and_refuses_what_is_not_one(tab: Tab, ui_stack: Stack) -> None:
    tab.open("new")
    page = tab.page
    chooser = page.get_by_label("Mask", exact=True)
    chooser.focus()
    assert page.evaluate("document.activeElement.id") == "f-mask_image"  # a real, focusable control
    chooser.set_input_files(files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}])
    page.locator("#f-mask_image-state", has_text="not a PNG, JPEG or WebP").wait_for()
    chooser.set_input_files(files=[{"name": "mask.png", "mimeType": "image/png", "buffer": _png((255, 255, 255))}])
    page.locator("#f-mask_image-state", has_text="uploaded").wait_for()
    page.wait_for_function(_LOADED, arg=page.get_by_role("img", name="Mask: mask.png").element_handle())
    page.get_by_role("button", name="Remove mask").click()
    assert page.locator("#f-mask_image-state").inner_text().startswith("Drop an image here")
    assert page.get_by_role("img", name="Mask: mask.png").count() == 0
    assert tab.csp_violations() == []


def test_a_controlnet_job_from_the_form_uploads_its_control_image_and_succeeds(tab: Tab, ui_stack: Stack) -> None:
    tab.open("new")
    page = tab.page
    control = page.locator("fieldset[data-section='controlnet']")
    reference = page.locator("fieldset[data-section='ip_adapter']")
    # "server default" is tiny here, which lists its tiny adapters; tiny-sd3 lists none, so neither section shows.
    control.wait_for()
    page.get_by_label("Model", exact=True).select_option("tiny-sd3")
    assert control.is_hidden() and reference.is_hidden()
    page.get_by_label("Model", exact=True).select_option("tiny")
    picker = page.get_by_label("ControlNet", exact=True)
    assert picker.locator("option").all_inner_texts() == ["none", "tiny-controlnet", "canny"]
    adapters = page.get_by_label("IP-Adapter", exact=True).locator("option")
    assert adapters.all_inner_texts() == ["none", "tiny-ip-adapter", "tiny-ip-adapter-plus"]
    page.get_by_label("Prompt", exact=True).fill("edges of a sun")
    for label, value in (("Width", "64"), ("Height", "64"), ("Steps", "4")):
        page.get_by_label(label, exact=True).fill(value)
    # A ControlNet without its image: the API's 422 appears beside the image field, and nothing is submitted.
    picker.select_option("canny")
    page.get_by_role("button", name="Submit job").click()
    page.locator("#f-controlnets\\.0\\.image-error").filter(has_text="required").wait_for()
    assert page.evaluate("location.hash") == "#/new"
    _drop(tab, ".drop-zone[data-drop='controlnets.0.image']", _png((240, 200, 10)), "sun.png")
    state = page.locator("#f-controlnets\\.0\\.image-state")
    state.filter(has_text="uploaded").wait_for()
    upload = state.inner_text().split("(upload ")[1].rstrip(").")
    page.wait_for_function(_LOADED, arg=page.get_by_role("img", name="Control image: sun.png").element_handle())
    page.get_by_label("Canny edges of the image", exact=True).check()
    page.get_by_label("Conditioning scale", exact=True).fill("0.8")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_function("() => location.hash.startsWith('#/job/')")
    job_id = page.evaluate("location.hash").removeprefix("#/job/")
    record: dict[str, Any] = api(ui_stack, "GET", f"/v1/jobs/{job_id}")
    [unit] = record["request"]["controlnets"]
    assert unit["model"] == "canny" and unit["image"] == {"upload": upload}
    assert (unit["conditioning_scale"], unit["preprocess"]) == (0.8, "canny")
    assert "ip_adapter" not in record["request"] and "image" not in record["request"]
    page.locator(".job-head .badge", has_text="succeeded").wait_for(timeout=120_000)
    assert page.get_by_role("region", name="Input images").locator("figcaption").inner_text() == (
        f"controlnet 1 (upload {upload})"
    )
    assert tab.csp_violations() == []
