"""Browser tests of the console: a real service process tree and Debian's headless Chromium.

- ``console_server`` (module): ``unlearn-service run`` (uvicorn API + one Celery worker, SQLite,
  the embedded broker) on a free port, seeded through its API (tests/console/seed.py).
- ``browser`` (module): /usr/bin/chromium launched by Playwright. Playwright cannot download its
  own browsers here; ``make browser`` (run by ``make test``) installs Debian's. Without it these
  tests skip with that hint, and with CI=true they fail: they must never pass silently in CI.
- ``console`` (function): a fresh browser context on the console whose every request is logged,
  with the network off: a request for anything but the service's own address is aborted and
  recorded, and the test fails if any was made (the console must fetch nothing from outside).
- ``shots``: where screenshots go (a temporary folder; ``UNLEARN_CONSOLE_SCREENSHOTS=docs/console``
  keeps them for the docs: ``make console-screenshots``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.console.seed import Seeded, seed
from tests.integration.conftest import (  # noqa: F401  (digits is a fixture used here)
    ADMIN_KEY,
    ROOT,
    Digits,
    cmdline,
    descendants,
    digits,
)
from tests.service_process import running_service

CHROMIUM = os.environ.get("UNLEARN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = "make browser (as root: apt-get install chromium chromium-driver)"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(f"{message}; install it with: {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"{message}; install it with: {INSTALL_HINT}")


# --- the service ----------------------------------------------------------------------------------


@dataclass
class ConsoleServer:
    url: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    seeded: Seeded

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def client(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def worker_pids(self) -> list[int]:
        """The Celery worker below the supervisor, with any children of its own."""
        for pid in descendants(self.proc.pid):
            if "celery" in cmdline(pid) and " worker" in cmdline(pid):
                return [pid, *descendants(pid)]
        raise AssertionError("no worker process: " + self.log())

    def database(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "unlearn.db", timeout=30)


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, digits: Digits) -> Iterator[ConsoleServer]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("console-service")
    with running_service(tmp) as running:
        with httpx.Client(
            base_url=running.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
        ) as c:
            seeded = seed(c, digits)
        yield ConsoleServer(running.url, running.data_dir, running.log_path, running.proc, seeded)


# --- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")  # closed after the console's tests, not held through the suite
def browser() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        _unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kept = os.environ.get("UNLEARN_CONSOLE_SCREENSHOTS")
    folder = (ROOT / kept) if kept else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Console:
    """One browser context on the console, with what it requested and what went wrong in it."""

    page: Any
    server: ConsoleServer
    shots: Path
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    def open(self, route: str = "#/models") -> None:
        self.page.goto(f"{self.server.url}/console{route}")
        self.ready()

    def go(self, route: str) -> None:
        """Another page of the already loaded app (a hash change: no reload)."""
        # Marked first: the hashchange comes later, and the old page's "ready" must not count.
        # (The same hash again fires no hashchange: the page on screen is already that one.)
        self.page.evaluate(
            "route => { if (window.location.hash === route) return;"
            " document.getElementById('main').dataset.state = 'navigating';"
            " window.location.hash = route; }",
            route,
        )
        self.ready()

    def ready(self) -> None:
        self.page.wait_for_selector("#main[data-state=ready]")

    def use_key(self, key: str = ADMIN_KEY) -> None:
        self.page.fill("#key-input", key)
        self.page.click("#key-form button[type=submit]")
        self.ready()

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def console(browser: Any, console_server: ConsoleServer, shots: Path) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
    page = context.new_page()
    c = Console(page, console_server, shots)
    own = console_server.host

    def route(r: Any) -> None:
        # The network is off but for the service itself: anything else is aborted and recorded.
        if urlsplit(r.request.url).netloc == own:
            r.continue_()
        else:
            c.blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page.on("request", lambda r: c.requests.append(r.url))
    page.on("pageerror", lambda e: c.page_errors.append(str(e)))
    page.on(
        "console",
        lambda m: c.csp_violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    try:
        yield c
        assert c.blocked == [], f"the console asked for outside URLs: {c.blocked}"
        assert all(urlsplit(u).netloc == own for u in c.requests), c.requests
        assert c.page_errors == [], c.page_errors
        assert c.csp_violations == [], c.csp_violations
    finally:
        context.close()
