"""Fixtures for the browser tests: a live server on a committed demo database and headless Chromium.

The tests drive the Debian `chromium` at /usr/bin/chromium through Playwright's sync API (never
`playwright install`). Without that binary they are skipped, unless CELLFACTORY_REQUIRE_BROWSER=1
(CI), in which case they fail.

The server runs the real app (CSRF on, session cookies as in production except `Secure`, which the
plain-HTTP loopback server cannot honour in every browser) in a background thread, on a fresh
database of its own with the demo network loaded. It does not use the `app` fixture, so the
suite's roll-back-everything `_transaction` fixture stays out of the way and data is committed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from cellfactory import create_app
from cellfactory.demo import DEMO_PASSWORD, load_demo
from tests.conftest import ARTIFACTS, fresh_database, make_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
BROWSER_DIR = Path(__file__).resolve().parent


def browser_required() -> bool:
    return os.environ.get("CELLFACTORY_REQUIRE_BROWSER", "") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in this folder is a `browser` test; skip them all when Chromium is absent (unless required)."""
    missing = None if CHROMIUM.exists() else f"{CHROMIUM} not found (apt-get install chromium)"
    for item in items:
        if BROWSER_DIR not in Path(str(item.path)).resolve().parents:
            continue
        item.add_marker(pytest.mark.browser)
        if missing and not browser_required():
            item.add_marker(pytest.mark.skip(reason=f"browser test: {missing}"))


@dataclass(frozen=True)
class LiveServer:
    url: str
    app: Flask
    password: str = DEMO_PASSWORD

    def __call__(self, path: str = "/") -> str:
        return self.url + path


@contextlib.contextmanager
def demo_server(instance: Path) -> Iterator[LiveServer]:
    """The app on 127.0.0.1 (free port) with the demo network committed in a database of its own."""
    with fresh_database() as url:
        app = create_app(make_config(url, instance))
        with app.app_context():
            load_demo(DEMO_PASSWORD)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
        thread.start()
        try:
            yield LiveServer(url=f"http://127.0.0.1:{server.server_port}", app=app)
        finally:
            server.shutdown()
            thread.join(timeout=10)
            server.server_close()
            # Close pooled connections so that PostgreSQL can drop the throw-away database.
            from cellfactory.extensions import db

            db.state(app).engine.dispose()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The demo network served for the session's browser tests."""
    with demo_server(tmp_path_factory.mktemp("browser-instance")) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
        if browser_required():
            pytest.fail(f"CELLFACTORY_REQUIRE_BROWSER=1 but {message}", pytrace=False)
        pytest.skip(message)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:  # the [test] extras were not installed
        if browser_required():
            pytest.fail(f"CELLFACTORY_REQUIRE_BROWSER=1 but Playwright is missing: {error}", pytrace=False)
        pytest.skip(f"Playwright is not installed: {error}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def open_tab(browser, server: LiveServer, request: pytest.FixtureRequest, **options) -> Iterator[object]:
    """A fresh browser context (no cookies) pointed at `server`, at a desktop size unless `viewport` says.

    `page.console_errors` collects console errors (CSP violations show up there). On a failure a
    screenshot of the page is left in test-artifacts/ as `FAILED-<test>.png`.
    """
    context = browser.new_context(base_url=server.url, **{"viewport": {"width": 1280, "height": 800},
                                                          "locale": "en-GB", "timezone_id": "Europe/Rome", **options})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.console_errors = errors
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            # A failed screenshot must not hide the real failure.
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
        context.close()


@pytest.fixture
def page(browser, live_server: LiveServer, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh tab on the session's live server (`open_tab`)."""
    with open_tab(browser, live_server, request) as tab:
        yield tab


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def screenshot(page) -> object:
    """Save a full-page screenshot as test-artifacts/<name>.png and return its path."""

    def _shot(name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _shot
