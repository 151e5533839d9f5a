"""Usable by everyone: every control reachable by keyboard, every page at phone and desktop widths (screenshots
kept as artifacts), and a page of 1 000 jobs drawn within a second."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import Stack, wait_for

from .conftest import Tab, api

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

PAGES = ["jobs", "new", "gallery", "batches", "fleet", "costs"]
WIDTHS = {"phone": (390, 844), "desktop": (1440, 900)}
#: The focusable controls of a page, each as a short description.
_CONTROLS = """() => [...document.querySelectorAll(
    'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])')]
  .filter((el) => !el.disabled && el.getClientRects().length && getComputedStyle(el).visibility !== 'hidden'
    && !el.closest('dialog:not([open])'))
  .map((el) => el.outerHTML.slice(0, 90))"""


@pytest.fixture(scope="module")
def some_jobs(ui_stack: Stack) -> str:
    """A finished job with an image and a batch, so that every page has something on it."""
    job = api(
        ui_stack, "POST", "/v1/jobs", json={"prompt": "a harbour at night", "width": 64, "height": 64, "steps": 2}
    )
    items = [{"prompt": f"tile {i}"} for i in range(3)]
    api(ui_stack, "POST", "/v1/batches", json={"items": items, "defaults": {"width": 64, "height": 64, "steps": 2}})
    wait_for(lambda: api(ui_stack, "GET", f"/v1/jobs/{job['id']}")["status"] == "succeeded", 120)  # images to show
    return str(job["id"])


@pytest.mark.parametrize("route", [*PAGES, "job"])
def test_the_keyboard_alone_reaches_every_control(tab: Tab, some_jobs: str, route: str) -> None:
    tab.open(f"job/{some_jobs}" if route == "job" else route)
    page = tab.page
    page.wait_for_timeout(300)
    controls = set(page.evaluate(_CONTROLS))
    reached: set[str] = set()
    page.locator("body").focus()
    for _ in range(len(controls) * 2 + 10):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "document.activeElement === document.body ? null : document.activeElement.outerHTML.slice(0, 90)"
        )
        if focused:
            reached.add(focused)
        if controls <= reached:
            break
    assert controls, "a page without controls"
    assert controls <= reached, f"never focused by Tab: {sorted(controls - reached)}"
    # Unlabelled controls would be unreachable for screen readers even when reachable by Tab.
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')].filter((el) => !el.labels.length &&
        !el.getAttribute('aria-label')).map((el) => el.name)"""
    )
    assert unlabelled == []


def test_every_page_renders_at_phone_and_desktop_width(tab: Tab, some_jobs: str, artifacts: Path) -> None:
    page = tab.page
    for name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        for route in [*PAGES, f"job/{some_jobs}"]:
            tab.open(route)
            page.wait_for_timeout(400)
            # Nothing wider than the screen but tables, which scroll inside their own box.
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"{route} at {width}px overflows by {overflow}px"
            page.screenshot(path=str(artifacts / f"{route.split('/')[0]}-{name}.png"), full_page=True)
    print(f"screenshots in {artifacts}")
    assert len(list(artifacts.glob("*-phone.png"))) == len(PAGES) + 1
    assert tab.csp_violations() == []


def test_a_page_of_1000_jobs_renders_within_a_second(tab: Tab, ui_stack: Stack, artifacts: Path) -> None:
    items = [{"prompt": f"prompt number {i} of a thousand"} for i in range(1000)]
    batch = api(
        ui_stack, "POST", "/v1/batches", json={"items": items, "defaults": {"width": 64, "height": 64, "steps": 2}}
    )
    api(ui_stack, "POST", f"/v1/batches/{batch['id']}/cancel")  # 1 000 records, without running them all
    tab.open("costs")
    timing = tab.page.evaluate(
        """(batch) => new Promise((resolve, reject) => {
          setTimeout(() => reject(new Error('no 1 000 rows after 30 s')), 30000);
          const t0 = performance.now();
          location.hash = `#/jobs?batch=${batch}&limit=1000`;
          const check = () => {
            const main = document.getElementById('main');
            if (main.dataset.page === 'jobs' && location.hash.includes('1000') && main.dataset.renderedMs
                && document.querySelectorAll('tbody tr[data-job]').length >= 1000) {
              requestAnimationFrame(() => resolve({ total_ms: performance.now() - t0,
                table_ms: Number(main.dataset.tableMs),
                rows: document.querySelectorAll('tbody tr[data-job]').length }));
            } else requestAnimationFrame(check);
          };
          check();
        })""",
        batch["id"],
    )
    (artifacts / "render-1000.json").write_text(json.dumps(timing))
    print("1000-job render:", json.dumps(timing))
    assert timing["rows"] == 1000
    # The bar: building and laying out the 1 000 rows. The total (five API pages from the real server, on a
    # shared CPU) is written to render-1000.json beside the screenshots, not asserted: speed belongs in bench/.
    assert timing["table_ms"] < 1000, timing
