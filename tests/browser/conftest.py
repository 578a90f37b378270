"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real server.

One service (engine, scheduler, SQLite state) serves every test of this folder through werkzeug's server on
127.0.0.1 (a free port), so the browser sees exactly what a user sees. Chromium is the system's; Playwright
never downloads a browser. The service is package-scoped, not session-scoped: the engine binds the poll jobs
of this process (``jobs.bind``), so it must be stopped before other test folders start engines of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from tests.settings import MIN_INTERVAL
from trackcheck.engine.core import Engine
from trackcheck.scheduling import Poller
from trackcheck.service.app import create_app
from trackcheck.service.config import ServiceConfig
from trackcheck.testing import MemorySource

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

# a shared 2-core machine can be slow: every auto-waiting assertion gets 15 s, not Playwright's 5 s
expect.set_options(timeout=15_000)

ARTIFACTS = Path(__file__).parent / "artifacts"
#: the screenshots the docs show
DOCS_IMG = Path(__file__).parents[2] / "docs" / "img"
CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"
#: the password of the ``vault`` plan's database URL: no page may ever contain it
PASSWORD = "S3cret-Pa55word"
TOKEN = "dashboard-test-t0ken"

PIPE_PLAN = """
name: pipe
description: checkout events through the collector log and the warehouse
key: event_id
params:
  test_id: {{required: true, description: the id every test event carries}}
defaults: {{interval: 200ms, timeout: 20s}}
sources:
  log: {{type: file, path: {log}}}
  wh: {{type: memory, table: wh}}
expect:
  - {{event_id: e1, event: view, amount: 0}}
  - {{event_id: e2, event: buy, amount: 25.5}}
  - {{event_id: e3, event: refund, amount: -5}}
stages:
  - name: log
    source: log
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect, fields: [event, amount]}}
  - name: warehouse
    source: wh
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: log, fields: [event, amount]}}
"""

VAULT_PLAN = f"""
name: vault
description: a warehouse behind a password (which the dashboard must never show)
key: event_id
params:
  test_id: {{required: true}}
defaults: {{interval: 200ms, timeout: 20s, retries: 0}}
sources:
  warehouse: {{type: sql, url: "postgresql://tracker:{PASSWORD}@127.0.0.1:1/events"}}
expect:
  - {{event_id: e1}}
stages:
  - name: warehouse
    source: warehouse
    table: events
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect}}
"""

EVENTS = [
    {"event_id": "e1", "event": "view", "amount": 0},
    {"event_id": "e2", "event": "buy", "amount": 25.5},
    {"event_id": "e3", "event": "refund", "amount": -5},
]


@dataclass
class Dashboard:
    """The running service: its URL, its engine, and the two systems of the ``pipe`` plan to write to."""

    url: str
    app: Flask
    log_file: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def engine(self) -> Engine:
        engine: Engine = self.app.extensions["trackcheck"].engine
        return engine

    @property
    def poller(self) -> Poller:
        poller: Poller = self.app.extensions["trackcheck"].poller
        return poller

    def submit(self, plan: str, **params: Any) -> str:
        version = self.engine.store.latest_plan(plan)
        assert version is not None, plan
        return self.engine.submit(version.id, params)

    def write_log(self, test_id: str, **changes: Any) -> None:
        """Append the run's events to the collector log, whole lines in one write (a line without its
        newline is still being written and would be ignored)."""
        lines = "".join(json.dumps({**e, **changes.get(e["event_id"], {}), "test_id": test_id}) + "\n" for e in EVENTS)
        with self._lock, self.log_file.open("a", encoding="utf-8") as out:
            out.write(lines)

    def write_warehouse(self, test_id: str, **changes: Any) -> None:
        rows = [{**e, **changes.get(e["event_id"], {}), "test_id": test_id} for e in EVENTS]
        with MemorySource._lock:
            MemorySource.tables["wh"].extend(rows)

    def later(self, seconds: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()

    def wait_for_status(self, run_id: str, status: str, timeout: float = 15) -> None:
        """For setting up a test's data (not for checking the page: that uses Playwright's auto-wait)."""
        deadline = time.monotonic() + timeout
        while self.engine.store.run(run_id).status != status:
            assert time.monotonic() < deadline, f"run {run_id} is {self.engine.store.run(run_id).status}, not {status}"
            time.sleep(0.1)


def screenshot(page: Page, name: str) -> None:
    """Into tests/browser/artifacts/; with ``TRACKCHECK_DOCS_SCREENSHOTS=1`` also into docs/img, whose copy
    docs/service.md shows (opt-in: a test run leaves the repository as it was)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TRACKCHECK_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(shot, DOCS_IMG / name)


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def serve(app: Flask) -> tuple[str, BaseWSGIServer, threading.Thread]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-test-server", daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server, thread


@pytest.fixture(scope="package")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("dashboard")
    plans = root / "plans"
    plans.mkdir()
    log_file = root / "collector" / "events.jsonl"
    log_file.parent.mkdir()
    (plans / "pipe.yaml").write_text(PIPE_PLAN.format(log=json.dumps(str(log_file))), encoding="utf-8")
    (plans / "vault.yaml").write_text(VAULT_PLAN, encoding="utf-8")
    MemorySource.reset()
    app = create_app(ServiceConfig(db=f"sqlite:///{root}/tc.db", plans=plans, min_interval=MIN_INTERVAL))
    url, server, thread = serve(app)
    try:
        yield Dashboard(url, app, log_file)
    finally:
        server.shutdown()
        thread.join(10)
        app.extensions["trackcheck"].stop()
        MemorySource.reset()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(f"Chromium is not installed; install it with:\n    {CHROMIUM_INSTALL}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context per test; script errors and CSP violations on any page fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    yield page
    context.close()
    assert not problems, problems
