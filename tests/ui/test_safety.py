"""Safe by default: a strict CSP that the pages never trip, hostile strings shown as text, the key kept out of
URLs and localStorage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from producer.apikeys import KeyStore
from tests.support import Stack, start_stack

from .conftest import Tab, api

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

HOSTILE = "<img src=x onerror=alert(1)>"
PAGES = ["jobs", "new", "gallery", "batches", "fleet", "costs"]


def test_every_ui_response_carries_a_strict_content_security_policy(ui_stack: Stack) -> None:
    for path in ("/ui/", "/ui/app.js", "/ui/style.css", "/ui/pages/jobs.js"):
        response = httpx.get(f"{ui_stack.api_url}{path}")
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"  # no inline, no eval
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{ui_stack.api_url}/ui/../producer/cli.py").status_code == 404


def test_the_pages_trip_no_csp_violation_and_the_listener_sees_one_when_there_is(tab: Tab, ui_stack: Stack) -> None:
    job = api(ui_stack, "POST", "/v1/jobs", json={"prompt": "csp check", "width": 64, "height": 64, "steps": 2})
    for route in [*PAGES, f"job/{job['id']}"]:
        tab.open(route)
    tab.page.wait_for_timeout(500)
    assert tab.csp_violations() == []
    # The listener is live: an inline script (what an injection would try) is blocked and reported.
    tab.page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        " document.body.append(s); }"
    )
    tab.page.wait_for_function("() => window.__csp.length > 0")
    assert tab.page.evaluate("window.__ran") is None
    assert any("script-src" in v for v in tab.csp_violations())
    tab.page.evaluate("window.__csp = []")
    tab.errors.clear()  # Chrome also logs the blocked script: the one error this test caused on purpose


def test_a_hostile_prompt_and_metadata_show_as_text_and_never_run(tab: Tab, ui_stack: Stack) -> None:
    body = {"prompt": HOSTILE, "negative_prompt": "<script>alert(2)</script>", "width": 64, "height": 64, "steps": 2}
    job = api(ui_stack, "POST", "/v1/jobs", json={**body, "metadata": {"<b>k</b>": "<svg onload=alert(3)>"}})
    tab.open(f"job/{job['id']}")
    page = tab.page
    assert page.locator(".prompt-full").inner_text() == HOSTILE
    page.locator(".outputs img").wait_for(timeout=60_000)
    assert page.get_by_text("<svg onload=alert(3)>").count() == 1
    assert page.locator("img[src='x'], main script, main svg[onload]").count() == 0
    tab.open("jobs")
    assert page.locator(f"tr[data-job='{job['id']}'] td.prompt").inner_text() == HOSTILE
    tab.open("gallery")
    page.locator(f"a[href='#/job/{job['id']}'] .caption").wait_for()
    assert page.locator(f"a[href='#/job/{job['id']}'] .caption").inner_text() == HOSTILE
    page.wait_for_timeout(300)
    assert tab.dialogs == []
    assert tab.csp_violations() == []


@pytest.fixture(scope="module")
def keyed_stack(redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API that requires keys (on its own Redis database), no worker."""
    url = redis_server.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(url).flushdb()
    stack = start_stack(tmp_path_factory.mktemp("ui-keys"), url, model_cache, SDQ_AUTH="required")
    yield stack
    stack.stop()


def test_with_keys_the_page_asks_once_and_keeps_the_key_out_of_urls_and_local_storage(
    browser: Any, keyed_stack: Stack, redis_server: str
) -> None:
    _, token = KeyStore(redis.Redis.from_url(redis_server.rsplit("/", 1)[0] + "/3")).create("acme")
    context = browser.new_context()
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(f"{keyed_stack.api_url}/ui/#/jobs")
    dialog = page.get_by_role("dialog", name="API key")
    dialog.wait_for()
    page.get_by_role("textbox", name="Key").fill("sdq_wrong_key")
    page.get_by_role("button", name="Use key").click()
    page.locator("#key-error", has_text="refused").wait_for()
    page.get_by_role("textbox", name="Key").fill(token)
    page.get_by_role("button", name="Use key").click()
    page.wait_for_function("() => document.getElementById('main').dataset.page === 'jobs'")
    assert not dialog.is_visible()
    job = httpx.post(
        f"{keyed_stack.api_url}/v1/jobs",
        json={"prompt": "mine", "width": 64, "height": 64},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    page.locator(f"tr[data-job='{job['id']}']").wait_for()  # the live stream carries the key in its header
    for route in ("#/fleet", "#/costs", f"#/job/{job['id']}"):
        page.evaluate("(r) => { location.hash = r; }", route)
        page.wait_for_function("(p) => document.getElementById('main').dataset.page === p", arg=route[2:].split("/")[0])
        shown = page.locator("#main").inner_text()
        if route == "#/fleet":  # an operator's view: said so, not "Something went wrong"
            assert "needs an admin key" in shown and "Something went wrong" not in shown
        elif route == "#/costs":  # a tenant key sees its own jobs' share of the bill
            assert "What your jobs cost" in shown and "Your jobs" in shown
    assert page.evaluate("JSON.stringify(localStorage)") == "{}"
    assert page.evaluate("sessionStorage.getItem('sdq-api-key')") == token
    assert urls and not [u for u in urls if token in u or token.split("_", 2)[2] in u]
    assert token not in page.url
    context.close()


def test_an_image_jobs_input_is_named_on_its_page(tab: Tab, ui_stack: Stack) -> None:
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(png, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    body = {"prompt": "repaint it", "width": 64, "height": 64, "steps": 2, "image": {"url": data_url}}
    job = api(ui_stack, "POST", "/v1/jobs", json=body)
    upload = job["request"]["image"]["upload"]  # the API stores a data URL as an upload
    tab.open(f"job/{job['id']}")
    section = tab.page.get_by_role("region", name="Input images")
    section.wait_for()
    # The page names it by its upload id, and shows it through the presigned link the record carries.
    assert section.locator("figcaption").inner_text() == f"image (upload {upload})"
    picture = section.get_by_role("img", name=f"Input image of job {job['id'][:8]}")
    picture.wait_for()
    tab.page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    assert "signature=" in (picture.get_attribute("src") or "")
    assert tab.csp_violations() == []
