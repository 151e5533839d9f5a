"""The dashboard against a real stack: submit from the form, watch a job run, cancel one, follow a batch."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Stack

from .conftest import Tab, api

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

#: A job that runs for several seconds on CPU, long enough to be seen running and canceled.
LONG = {"width": 512, "height": 512, "steps": 150}


def _watch_progress(tab: Tab) -> None:
    # Every value the job page's progress bar takes, sampled each frame.
    tab.page.evaluate(
        """() => { window.__seen = []; const look = () => { const bar = document.querySelector('.job-head progress');
        if (bar && bar.hasAttribute('value')) { const v = bar.value + '/' + bar.max;
        if (window.__seen[window.__seen.length - 1] !== v) window.__seen.push(v); } requestAnimationFrame(look); };
        look(); }"""
    )


def test_a_job_submitted_from_the_form_shows_its_progress_moving_then_its_image(tab: Tab) -> None:
    tab.open("new")
    page = tab.page
    page.get_by_label("Prompt", exact=True).fill("a lighthouse on a cliff at dusk")
    page.get_by_label("Width").fill("128")
    page.get_by_label("Height").fill("128")
    page.get_by_label("Steps").fill("40")  # long enough on 2 loaded cores for several progress events
    page.get_by_label("Seed").fill("42")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_function("() => location.hash.startsWith('#/job/')")
    tab.open(page.evaluate("location.hash").removeprefix("#/"))
    _watch_progress(tab)
    image = page.locator(".outputs img")
    image.wait_for(timeout=120_000)
    page.wait_for_function("() => document.querySelector('.outputs img').naturalWidth === 128")
    assert page.locator(".job-head .badge").inner_text() == "succeeded"
    seen: list[str] = page.evaluate("window.__seen")
    steps = [tuple(map(float, v.split("/"))) for v in seen]
    moving = [step for step, total in steps if 0 < step < total]
    assert len(moving) >= 2, f"the bar did not move through intermediate steps: {seen}"
    assert steps[-1][0] == steps[-1][1]
    link = page.get_by_role("link", name="Download image 1")
    assert "signature=" in (link.get_attribute("href") or "")
    assert page.locator(".pairs dd", has_text="42").count() >= 1  # the seed, shown with the request


def test_the_apis_validation_errors_show_beside_their_fields(tab: Tab, ui_stack: Stack) -> None:
    before = len(api(ui_stack, "GET", "/v1/jobs?limit=200")["jobs"])
    tab.open("new")
    page = tab.page
    page.get_by_label("Prompt", exact=True).fill("a fox")
    page.get_by_label("Width").fill("100")
    page.get_by_label("Steps").fill("500")
    page.get_by_role("button", name="Submit job").click()
    page.locator("#f-width-error").wait_for()
    assert "multiple of 8" in page.locator("#f-width-error").inner_text()
    assert "150" in page.locator("#f-steps-error").inner_text()
    assert page.get_by_label("Width").get_attribute("aria-invalid") == "true"
    assert page.evaluate("location.hash") == "#/new"
    assert len(api(ui_stack, "GET", "/v1/jobs?limit=200")["jobs"]) == before  # nothing was enqueued


def test_a_running_job_is_canceled_from_its_page(tab: Tab, ui_stack: Stack) -> None:
    job = api(ui_stack, "POST", "/v1/jobs", json={"prompt": "a long render", **LONG})
    tab.open(f"job/{job['id']}")
    page = tab.page
    page.locator(".job-head .badge", has_text="running").wait_for(timeout=60_000)
    page.get_by_role("button", name="Cancel").click()
    page.locator(".job-head .badge", has_text="canceled").wait_for(timeout=60_000)
    assert api(ui_stack, "GET", f"/v1/jobs/{job['id']}")["status"] == "canceled"
    assert page.get_by_role("button", name="Cancel").is_disabled()


def test_a_batch_of_20_shows_its_counts_reaching_done(tab: Tab, ui_stack: Stack) -> None:
    items: list[dict[str, Any]] = [{"prompt": f"tile {i}"} for i in range(20)]
    batch = api(
        ui_stack, "POST", "/v1/batches", json={"items": items, "defaults": {"width": 64, "height": 64, "steps": 2}}
    )
    tab.open("batches")
    card = tab.page.locator(f"[data-batch='{batch['id']}']")
    card.wait_for()
    card.locator(".done", has_text="20 of 20 done").wait_for(timeout=120_000)
    assert card.locator("[data-status='succeeded']").inner_text().split() == ["succeeded", "20"]
    assert card.locator("progress").evaluate("p => [p.value, p.max]") == [20, 20]
    card.get_by_role("link", name="Jobs of batch").click()
    tab.page.wait_for_function("() => document.querySelectorAll('tbody tr[data-job]').length === 20")
    assert tab.page.locator("tbody .badge", has_text="succeeded").count() == 20


def test_the_jobs_table_adds_new_jobs_and_moves_their_progress_live(tab: Tab, ui_stack: Stack) -> None:
    tab.open("jobs")
    job = api(ui_stack, "POST", "/v1/jobs", json={"prompt": "arrives while watching", "width": 64, "height": 64})
    row = tab.page.locator(f"tr[data-job='{job['id']}']")
    row.wait_for(timeout=30_000)
    row.locator(".badge", has_text="succeeded").wait_for(timeout=60_000)
    assert row.locator("progress").evaluate("p => p.value === p.max")
