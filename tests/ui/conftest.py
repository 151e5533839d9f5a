"""A real stack (`sdq api`, a `sdq worker` with the tiny model, `sdq controller`) and a real Chromium for it.

The browser is Debian's `chromium` package (`make test` installs it), driven by Playwright through
`executable_path`: `playwright install` downloads browser builds, which these machines cannot. Without chromium
(or the playwright package) every browser test is skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support import Stack, start_stack

CHROMIUM = os.environ.get("SDQ_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Where screenshots go: $SDQ_TEST_ARTIFACTS, else a pytest temp folder (printed in the test's output).
ARTIFACTS_ENV = "SDQ_TEST_ARTIFACTS"

# Every page records CSP violations and dialogs before any of its scripts run.
_RECORDER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no chromium at {CHROMIUM}: `make test` installs Debian's chromium package (apt-get install chromium)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: pip install 'sdqueue[test]'")
    return CHROMIUM


@pytest.fixture(scope="package")
def browser(chromium_path: str) -> Iterator[Any]:
    # Package scope, not session: Playwright's sync API keeps an asyncio loop running in this thread while it is
    # open, and the tests after tests/ui that call asyncio.run() would fail with "cannot be called from a running
    # event loop".
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        # --no-sandbox: these tests run as root in containers, where Chromium's sandbox cannot start.
        launched = driver.chromium.launch(executable_path=chromium_path, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def ui_stack(redis_server: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API, one worker and the controller, on an emptied Redis."""
    redis.Redis.from_url(redis_server).flushdb()
    stack = start_stack(tmp_path_factory.mktemp("ui"), redis_server, model_cache, SDQ_IDLE_TIMEOUT_S="0")
    stack.start_worker()
    stack.start_controller(SDQ_PROVIDER="none")
    yield stack
    stack.stop()


class Tab:
    """A page of the dashboard with what it saw: dialogs, page errors, console errors, request URLs."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.urls: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", self._console)
        page.on("request", lambda r: self.urls.append(r.url))

    def _console(self, message: Any) -> None:
        # Chrome logs every 4xx answer ("Failed to load resource"): the pages expect some (a 422 shown beside its
        # field, a 404 from an optional route such as the model catalog). Script errors come through `pageerror`.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"{message.text} ({message.location.get('url', '')})")

    def open(self, route: str) -> None:
        """Go to `#/<route>` and wait until that page has rendered."""
        page = route.split("?")[0].split("/")[0] or "jobs"
        if self.page.url.startswith(f"{self.base}/ui/"):
            self.page.evaluate("(r) => { location.hash = '#/' + r; }", route)
        else:
            self.page.goto(f"{self.base}/ui/#/{route}")
        self.page.wait_for_function(
            "(p) => document.getElementById('main').dataset.page === p && location.hash.includes(p)", arg=page
        )

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("window.__csp"))


@pytest.fixture
def tab(browser: Any, ui_stack: Stack) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(_RECORDER)
    page = context.new_page()
    page.set_default_timeout(30_000)
    opened = Tab(page, ui_stack.api_url)
    yield opened
    context.close()
    assert not opened.errors, opened.errors


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get(ARTIFACTS_ENV) or tmp_path_factory.mktemp("ui-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def api(stack: Stack, method: str, path: str, **kwargs: Any) -> Any:
    """A plain HTTP call to the stack's API (setting up what a test then looks at in the browser)."""
    response = httpx.request(method, f"{stack.api_url}{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()
