"""What broke, since when, for which test ids: the plan page's grid of runs by stage, "failing since" on the
plan page and the plans list, and the runs search by parameter value, in a real browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard, screenshot, unique

pytestmark = pytest.mark.browser

PASSED_BG = "rgb(218, 251, 225)"  # --passed-bg
FAILED_BG = "rgb(255, 235, 233)"  # --failed-bg


def ended_runs(dashboard: Dashboard, outcomes: str) -> list[str]:
    """Runs of ``pipe`` started in this order, ``p`` for one that passes and ``f`` for one that fails, all
    polled at once; their ids once each has ended."""
    started = []
    for outcome in outcomes:
        test_id = unique("pass" if outcome == "p" else "fail")
        started.append((dashboard.submit("pipe", test_id=test_id), test_id, outcome))
    for _, test_id, outcome in started:
        dashboard.write_log(test_id)
        dashboard.write_warehouse(test_id, **({"e2": {"amount": 26}} if outcome == "f" else {}))
    for run_id, _, outcome in started:
        dashboard.wait_for_status(run_id, "passed" if outcome == "p" else "failed")
    return [run_id for run_id, _, _ in started]


def passed_run(dashboard: Dashboard) -> tuple[str, str]:
    test_id = unique("pass")
    run_id = dashboard.submit("pipe", test_id=test_id)
    dashboard.write_log(test_id)
    dashboard.write_warehouse(test_id)
    dashboard.wait_for_status(run_id, "passed")
    return run_id, test_id


def failed_run(dashboard: Dashboard) -> tuple[str, str]:
    """A run whose warehouse got the purchase with another amount: ``log`` passes, ``warehouse`` fails."""
    test_id = unique("fail")
    run_id = dashboard.submit("pipe", test_id=test_id)
    dashboard.write_log(test_id)
    dashboard.write_warehouse(test_id, e2={"amount": 26})
    dashboard.wait_for_status(run_id, "failed")
    return run_id, test_id


def test_the_grid_shows_each_run_s_stages_by_status_and_links_to_the_run(dashboard: Dashboard, page: Page) -> None:
    *_, good, bad = ended_runs(dashboard, "ppfpppfppf")  # a few runs, for the page's screenshot in the docs

    page.goto(f"{dashboard.url}/plans/pipe")
    grid = page.locator("#run-grid")
    expect(grid.locator("tbody th[scope=row]")).to_have_text(["log", "warehouse"])
    good_wh = grid.locator(f'tr[data-stage="warehouse"] td[data-run="{good}"]')
    bad_wh = grid.locator(f'tr[data-stage="warehouse"] td[data-run="{bad}"]')
    bad_log = grid.locator(f'tr[data-stage="log"] td[data-run="{bad}"]')
    expect(good_wh).to_have_attribute("data-status", "passed")
    expect(bad_wh).to_have_attribute("data-status", "failed")
    expect(bad_log).to_have_attribute("data-status", "passed")
    # not colour alone: a glyph, the status in words for screen readers, and a tooltip
    expect(bad_wh.locator("a")).to_have_text(re.compile(r"✗\s*warehouse of run \w{8}: failed"))
    expect(bad_wh.locator("a")).to_have_attribute("title", re.compile(r"^warehouse: failed in .* found"))
    expect(good_wh.locator("a")).to_have_text(re.compile(r"✓\s*warehouse of run \w{8}: passed"))
    assert good_wh.locator("a").evaluate("e => getComputedStyle(e).backgroundColor") == PASSED_BG
    assert bad_wh.locator("a").evaluate("e => getComputedStyle(e).backgroundColor") == FAILED_BG
    # newest right, as Airflow's grid: the failed run came last
    expect(grid.locator("thead th.grid__run").last).to_have_attribute("data-run", bad)
    good_box, bad_box = good_wh.bounding_box(), bad_wh.bounding_box()
    assert good_box and bad_box and good_box["x"] < bad_box["x"]
    expect(page.locator("#trend-title-1")).to_have_text("Pass rate")
    expect(page.locator("#trend-1 circle title").last).to_have_text(re.compile(rf"\d+% \(run {bad[:8]}\)$"))
    expect(page.locator('#trend-2 g[data-series="warehouse"] circle title').last).to_have_text(
        re.compile(rf"^warehouse: .* \(run {bad[:8]}\)$")
    )
    screenshot(page, "plan-page.png")

    bad_wh.locator("a").click()
    expect(page).to_have_url(f"{dashboard.url}/runs/{bad}")
    expect(page.locator("#run-status .badge")).to_have_attribute("data-status", "failed")
    # the run page marks the very cell that differs in what the warehouse read
    marked = page.locator("#records-warehouse td.mismatch")
    expect(marked).to_have_count(1)
    expect(marked).to_have_attribute("data-field", "amount")
    expect(marked).to_have_text(re.compile(r"^26 \(expected 25\.5\)$"))


def test_failing_since_names_the_first_failed_run_and_the_failing_test_ids(dashboard: Dashboard, page: Page) -> None:
    passed_run(dashboard)
    first, first_id = failed_run(dashboard)
    second, second_id = failed_run(dashboard)

    page.goto(f"{dashboard.url}/plans/pipe")
    failing = page.locator("#failing")
    expect(failing.locator("h2")).to_have_text(re.compile(r"^Failing since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    expect(failing).to_have_attribute("data-count", "2")
    expect(page.locator("#failing-first")).to_have_attribute("href", f"/runs/{first}")
    expect(failing.locator(".failing-runs li")).to_have_count(2)
    assert failing.locator(".failing-runs li").evaluate_all("items => items.map(i => i.dataset.run)") == [
        second,
        first,
    ]
    expect(failing.locator(".failing-runs li a")).to_have_text([f"test_id={second_id}", f"test_id={first_id}"])

    page.goto(f"{dashboard.url}/plans")
    cell = page.locator('tr[data-plan="pipe"] .failing-cell')
    expect(cell.locator(".failing-count")).to_have_text("2 runs")
    expect(cell.locator("a.badge")).to_have_attribute("href", f"/runs/{first}")
    cell.get_by_role("link", name=f"test_id={first_id}").click()
    expect(page).to_have_url(f"{dashboard.url}/runs/{first}")

    passed_run(dashboard)  # fixed: a plan whose latest run passed shows nothing of the sort
    page.goto(f"{dashboard.url}/plans/pipe")
    expect(page.locator("#run-grid")).to_be_visible()
    expect(page.locator("#failing")).to_have_count(0)
    page.goto(f"{dashboard.url}/plans")
    expect(page.locator('tr[data-plan="pipe"] .failing-cell')).to_be_empty()


def test_the_runs_search_finds_a_run_by_its_test_id(dashboard: Dashboard, page: Page) -> None:
    wanted, other = unique("find"), unique("other")
    wanted_run = dashboard.submit("pipe", test_id=wanted)
    other_run = dashboard.submit("pipe", test_id=other)
    try:
        page.goto(dashboard.url + "/")
        expect(page.locator(f'tr[data-run="{other_run}"]')).to_have_count(1)
        page.locator("#filter-param").fill(f"test_id={wanted}")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"[?&]param=test_id%3D" + wanted))
        expect(page.locator("tr.run-row")).to_have_count(1)
        expect(page.locator(f'tr[data-run="{wanted_run}"] td.params')).to_have_text(f"test_id={wanted}")
        expect(page.locator("#filter-param")).to_have_value(f"test_id={wanted}")
        screenshot(page, "runs-search.png")

        page.locator("#filter-param").fill(other)  # a bare value: any parameter
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("tr.run-row")).to_have_count(1)
        expect(page.locator(f'tr[data-run="{other_run}"]')).to_have_count(1)

        page.locator("#filter-param").fill("test id=t-1")
        with page.expect_response(re.compile(r"param=")) as answer:
            page.get_by_role("button", name="Filter").click()
        assert answer.value.status == 400
        expect(page.get_by_role("heading", level=1)).to_have_text("Bad request")
        expect(page.get_by_role("alert").last).to_have_text(
            re.compile(r"^Search by parameter \(param\): 'test id' is not a parameter name")
        )
    finally:
        dashboard.engine.cancel(wanted_run)
        dashboard.engine.cancel(other_run)
