"""Swagger UI at /api/docs in Chromium, on a service with an API token: the page opens without one and
renders every operation of the generated document from this host's assets under the strict CSP (the
``page`` fixture fails the test on any console error, CSP violations included); "Try it out" on
``GET /api/runs`` is refused without the token and lists the real runs once "Authorize" has it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import TOKEN, Dashboard, screenshot, serve, unique
from tests.settings import MIN_INTERVAL
from trackcheck.service.app import create_app
from trackcheck.service.config import ServiceConfig
from trackcheck.service.runtime import Service


@pytest.fixture
def guarded(dashboard: Dashboard) -> Iterator[str]:
    """A second app on the same state database, with an API token; its service is not started (the
    package's service polls)."""
    service = Service(ServiceConfig(db=dashboard.engine.store.url, api_token=TOKEN, min_interval=MIN_INTERVAL))
    url, server, thread = serve(create_app(service=service))
    yield url
    server.shutdown()
    thread.join(10)
    service.engine.store.close()


def test_api_docs_list_every_operation_and_try_it_out_lists_the_runs(
    dashboard: Dashboard, guarded: str, page: Page
) -> None:
    run_id = dashboard.submit("pipe", test_id=unique())
    document = httpx.get(f"{guarded}/api/openapi.json").json()
    operations = sum(1 for item in document["paths"].values() for method in item if method != "parameters")
    elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(guarded) else elsewhere.append(r.url))

    answer = page.goto(f"{guarded}/api/docs")
    assert answer is not None and "script-src 'self';" in answer.headers["content-security-policy"]
    expect(page.locator(".opblock")).to_have_count(operations)
    expect(page.locator(".opblock-summary-path", has_text=re.compile(r"^/api/runs/batch$"))).to_have_count(1)
    screenshot(page, "api-docs.png")

    path = page.locator(".opblock-summary-path", has_text=re.compile(r"^/api/runs$"))
    runs = page.locator(".opblock-get", has=path)
    runs.locator(".opblock-summary").click()
    runs.get_by_role("button", name="Try it out").click()
    runs.get_by_role("button", name="Execute").click()
    status = runs.locator(".live-responses-table tr.response .response-col_status")
    expect(status).to_have_text("401")

    page.locator(".auth-wrapper").get_by_role("button", name="Authorize").click()
    dialog = page.locator(".modal-ux")
    dialog.get_by_label("auth-bearer-value").fill(TOKEN)
    dialog.get_by_role("button", name="Apply credentials").click()
    dialog.get_by_role("button", name="Close").click()
    runs.get_by_role("button", name="Execute").click()
    expect(status).to_have_text("200")
    expect(runs.locator(".live-responses-table tr.response .response-col_description")).to_contain_text(run_id)
    assert elsewhere == [], f"the page loaded from elsewhere: {elsewhere}"
