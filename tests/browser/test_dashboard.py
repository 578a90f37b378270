"""The dashboard as a user sees it: live runs, a failed run's evidence, filters, the start-a-run form, the
login, and no credential anywhere."""

from __future__ import annotations

import re
import struct
from collections import deque
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import ARTIFACTS, PASSWORD, TOKEN, Dashboard, serve, unique
from tests.settings import MIN_INTERVAL
from trackcheck.service.app import create_app
from trackcheck.service.config import ServiceConfig
from trackcheck.service.runtime import Service
from trackcheck.service.schedules import ScheduleSpec, add_schedule

pytestmark = pytest.mark.browser

WAITING_BG = "rgb(255, 248, 197)"  # --waiting-bg
PASSED_BG = "rgb(218, 251, 225)"  # --passed-bg


def test_runs_page_follows_a_run_live_without_reloading(dashboard: Dashboard, page: Page) -> None:
    test_id = unique()
    run_id = dashboard.submit("pipe", test_id=test_id)
    page.goto(dashboard.url + "/")
    row = page.locator(f'tr[data-run="{run_id}"]')
    log, warehouse = row.locator('li[data-stage="log"]'), row.locator('li[data-stage="warehouse"]')
    expect(log).to_have_attribute("data-status", "waiting")
    expect(log.locator(".step__status")).to_have_text("waiting")
    expect(warehouse.locator(".step__status")).to_have_text("pending")
    assert log.evaluate("e => getComputedStyle(e).backgroundColor") == WAITING_BG
    page.evaluate("window.notReloaded = true")

    dashboard.write_log(test_id)  # the data arrives after the page loaded
    expect(log.locator(".step__status")).to_have_text("passed", timeout=15_000)
    expect(log).to_have_class(re.compile(r"\bstep--passed\b"))
    assert log.evaluate("e => getComputedStyle(e).backgroundColor") == PASSED_BG
    expect(warehouse.locator(".step__status")).to_have_text("waiting")

    dashboard.write_warehouse(test_id)
    expect(warehouse.locator(".step__status")).to_have_text("passed", timeout=15_000)
    expect(row.locator("td .badge")).to_have_text(re.compile(r"passed"))
    assert page.evaluate("window.notReloaded === true"), "the page was reloaded"


def test_failed_run_page_shows_mismatches_side_by_side_and_a_screenshot(dashboard: Dashboard, page: Page) -> None:
    test_id = unique()
    run_id = dashboard.submit("pipe", test_id=test_id)
    page.goto(f"{dashboard.url}/runs/{run_id}")
    status = page.locator("#run-status .badge")
    expect(status).to_have_attribute("data-status", "running")
    page.evaluate("window.notReloaded = true")
    # the log gets the events soon, the warehouse later and with the purchase amount changed on its way
    dashboard.later(0.4, lambda: dashboard.write_log(test_id))
    dashboard.later(1.4, lambda: dashboard.write_warehouse(test_id, e2={"amount": 26}))

    expect(status).to_have_attribute("data-status", "failed", timeout=15_000)
    assert page.evaluate("window.notReloaded === true"), "the run page did not update in place"
    expect(page.locator('.pipeline li[data-stage="log"] .step__status')).to_have_text("passed")
    expect(page.locator('.pipeline li[data-stage="warehouse"] .step__status')).to_have_text("failed")
    table = page.locator("#evidence-warehouse table.mismatches")
    expect(table.locator("thead th")).to_have_text(["Key", "Field", "Expected", "Actual"])
    expect(table.locator("tbody tr")).to_have_count(1)
    cells = table.locator("tbody tr td")
    expect(cells).to_have_text(["e2", "amount", "25.5", "26"])
    expected_box, actual_box = cells.nth(2).bounding_box(), cells.nth(3).bounding_box()
    assert expected_box and actual_box
    assert abs(expected_box["y"] - actual_box["y"]) < 1 and expected_box["x"] < actual_box["x"]  # side by side

    expect(page.get_by_role("heading", level=1)).to_have_text(f"Run {run_id[:8]} of pipe")
    headings = ["Summary", "Arrival latency", "Arrival per event", "Differences", "Poll timeline", "Records read"]
    expect(page.get_by_role("heading", level=2)).to_have_text(headings)
    expect(page.locator('.chart g[data-stage="log"] rect')).to_have_count(1)
    expect(page.locator('.chart g[data-stage="warehouse"] .chart__value')).to_contain_text("failed")
    expect(page.locator('table.polls tr[data-stage="warehouse"][data-outcome="failed"]')).to_have_count(1)
    expect(page.locator("#records-warehouse table.records-table tbody tr")).to_have_count(3)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "run-detail.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1280 and height >= 900, (width, height)
    assert len(data) > 40_000, f"a suspiciously small screenshot: {len(data)} bytes"


def test_filters_narrow_the_runs_by_plan_and_status(dashboard: Dashboard, page: Page) -> None:
    vault_run = dashboard.submit("vault", test_id=unique())  # its database cannot be reached: error
    pipe_run = dashboard.submit("pipe", test_id=unique())
    dashboard.wait_for_status(vault_run, "error")
    try:
        page.goto(dashboard.url + "/")
        expect(page.locator(f'tr[data-run="{pipe_run}"]')).to_have_count(1)
        page.locator("#filter-plan").select_option("vault")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"[?&]plan=vault"))
        expect(page.locator(f'tr[data-run="{vault_run}"]')).to_have_count(1)
        expect(page.locator(f'tr[data-run="{pipe_run}"]')).to_have_count(0)
        assert set(page.locator("tr.run-row").evaluate_all("rows => rows.map(r => r.dataset.plan)")) == {"vault"}

        page.locator("#filter-status").select_option("error")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"plan=vault.*status=error|status=error.*plan=vault"))
        expect(page.locator(f'tr[data-run="{vault_run}"] .badge').first).to_have_text(re.compile("error"))
        assert set(page.locator("tr.run-row").evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"error"}

        page.locator("#filter-status").select_option("passed")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("tr.run-row")).to_have_count(0)
        expect(page.locator("#runs .meta")).to_contain_text("No runs match these filters")
    finally:
        dashboard.engine.cancel(pipe_run)


def test_start_a_run_form_shows_errors_inline_then_lands_on_the_run(dashboard: Dashboard, page: Page) -> None:
    page.goto(dashboard.url + "/runs/new")
    page.get_by_label("Plan", exact=True).select_option("pipe")
    page.get_by_role("button", name="Show its parameters").click()
    field = page.locator("#param-test_id")
    expect(field).to_be_visible()

    page.get_by_role("button", name="Start run").click()  # test_id left empty
    expect(page.locator("#param-test_id-error")).to_contain_text("required run parameter is missing")
    expect(page.locator("#param-test_id")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-errors")).to_be_visible()

    test_id = unique("form")
    page.locator("#param-test_id").fill(test_id)
    page.locator("summary", has_text="Options").click()
    page.get_by_label(re.compile("^Poll every")).fill("not a duration")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("#interval-error")).to_contain_text("is not a duration")
    expect(page.locator("#param-test_id")).to_have_value(test_id)  # what was typed is kept

    page.get_by_label(re.compile("^Poll every")).fill("300ms")
    page.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f]{32}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("of pipe")
    expect(page.locator(".facts")).to_contain_text(test_id)
    expect(page.locator("#run-status .badge")).to_have_text(re.compile("running"))

    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-status .badge")).to_have_text(re.compile("cancelled"))
    expect(page.locator('.pipeline li[data-stage="log"] .step__status')).to_have_text("skipped")
    first = page.url

    page.get_by_role("button", name="Run again").click()  # same version, parameters and overrides
    expect(page).not_to_have_url(first)
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f]{32}$"))
    expect(page.locator(".facts")).to_contain_text(test_id)
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-status .badge")).to_have_text(re.compile("cancelled"))

    # a form post from another site (CSRF) is refused, whatever it carries
    forged = page.request.post(
        dashboard.url + "/runs/new",
        form={"plan": "pipe", "param:test_id": "forged"},
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        max_redirects=0,
    )
    assert forged.status == 403


def test_no_page_shows_a_source_password(dashboard: Dashboard, page: Page) -> None:
    run_id = dashboard.submit("vault", test_id=unique())
    dashboard.wait_for_status(run_id, "error")
    add_schedule(dashboard.poller, ScheduleSpec("vault", "10 2 * * *", {"test_id": "nightly"}))
    page.goto(f"{dashboard.url}/plans/vault")
    expect(page.locator("pre.yaml")).to_contain_text("postgresql://tracker:***@127.0.0.1:1/events")
    page.goto(f"{dashboard.url}/runs/{run_id}")
    expect(page.locator("#evidence-warehouse")).to_contain_text("source error")

    # every page reachable by a link from these, plus the fragments the pages poll
    seeds = ["/", "/?plan=vault", "/plans", "/schedules", "/runs/new?plan=vault", f"/fragments/runs/{run_id}"]
    seen: set[str] = set()
    queue = deque(dashboard.url + s for s in seeds)
    while queue and len(seen) < 80:
        url = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        response = page.request.get(url)
        body = response.text()
        assert response.ok, (url, response.status)
        assert PASSWORD not in body, url
        if url.startswith(dashboard.url + "/fragments/"):
            continue
        page.goto(url)
        assert PASSWORD not in page.content(), url
        for href in page.locator("a[href]").evaluate_all("links => links.map(a => a.getAttribute('href'))"):
            target = urljoin(url, href).split("#")[0]
            if urlsplit(target).netloc == urlsplit(dashboard.url).netloc and "/assets/" not in target:
                queue.append(target)
    assert {f"{dashboard.url}/plans/vault", f"{dashboard.url}/runs/{run_id}"} <= seen
    assert any("version=1" in url for url in seen), "the plan's history pages were not visited"


@pytest.fixture
def locked(dashboard: Dashboard) -> Iterator[str]:
    """A second app on the same state database, with an API token: its pages need a login. Its service is
    not started (no scheduler): it only serves pages, while the package's service polls."""
    service = Service(ServiceConfig(db=dashboard.engine.store.url, api_token=TOKEN, min_interval=MIN_INTERVAL))
    url, server, thread = serve(create_app(service=service))
    yield url
    server.shutdown()
    thread.join(10)
    service.engine.store.close()


def test_with_an_api_token_the_dashboard_needs_a_login(locked: str, browser: Browser, page: Page) -> None:
    page.goto(locked + "/plans")
    expect(page).to_have_url(re.compile(r"/login\?next=/plans$"))
    page.get_by_label("API token").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#token-error")).to_contain_text("not the service's API token")

    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(locked + "/plans")
    expect(page.get_by_role("heading", level=1)).to_have_text("Plans")
    assert TOKEN not in page.content()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "trackcheck_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]

    stranger = browser.new_context()
    try:
        response = stranger.request.get(locked + "/fragments/runs", headers={"HX-Request": "true"}, max_redirects=0)
        assert response.status == 401 and response.headers["hx-redirect"].startswith("/login")
    finally:
        stranger.close()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto(locked + "/")
    expect(page).to_have_url(re.compile(r"/login"))
