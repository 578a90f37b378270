"""The schedules page in a real browser: create a schedule with its run options, see errors beside their
fields, edit it, pause and resume it, delete it; and a schedule that fires starts a run with those options."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard, screenshot, unique
from trackcheck.service import schedules


def test_a_schedule_is_created_edited_paused_and_deleted_in_the_dashboard(dashboard: Dashboard, page: Page) -> None:
    test_id = unique("nightly")
    page.goto(dashboard.url + "/schedules")
    page.get_by_role("link", name="New schedule").click()
    page.get_by_label("Plan", exact=True).select_option("pipe")
    page.get_by_role("button", name="Show its parameters").click()

    # everything wrong at once: each error beside its field, nothing saved
    page.locator("#cron").fill("every night")
    page.locator("summary", has_text="Options").click()
    page.get_by_label(re.compile("^Poll every")).fill("soon")
    page.locator("#expect").fill('[{"event": "view"}]')
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator("#form-errors")).to_be_visible()
    expect(page.locator("#interval-error")).to_contain_text("is not a duration")
    page.locator("#param-test_id").fill(test_id)
    page.get_by_label(re.compile("^Poll every")).fill("2s")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator("#cron-error")).to_contain_text("cron")
    page.locator("#cron").fill("10 2 * * *")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator("#expect-error")).to_contain_text("event_id")  # the plan's key is missing
    assert all(s.params.get("test_id") != test_id for s in dashboard.engine.store.schedules()), "nothing saved"

    page.locator("#expect").fill('[{"event_id": "e1", "event": "view", "amount": 0}]')
    page.locator("#timeout").fill("5m")
    page.get_by_role("button", name="Create schedule").click()
    expect(page).to_have_url(re.compile(r"/schedules$"))
    [schedule] = [s for s in dashboard.engine.store.schedules() if s.params.get("test_id") == test_id]
    row = page.locator(f'tr[data-schedule="{schedule.id}"]')
    expect(row).to_contain_text("10 2 * * *")
    expect(row).to_contain_text("interval 2s, timeout 5m, 1 expected event")
    expect(row.locator("time")).to_have_count(2)  # the next run, and when it was created
    # the actions stay a cell of the row: its top and bottom line up with its neighbours' (a flex cell did not)
    boxes = [cell.bounding_box() for cell in row.locator("td").all()]
    assert all(b is not None for b in boxes)
    assert len({(round(b["y"]), round(b["height"])) for b in boxes if b}) == 1, boxes

    # what it fires: a run of pipe with those parameters and options
    schedules.fire(schedule.id)
    fired = dashboard.engine.store.schedule(schedule.id)
    assert fired is not None and fired.last_run_id is not None, fired
    run = dashboard.engine.store.run(fired.last_run_id)
    assert (run.params, run.overrides, len(run.expect)) == (
        {"test_id": test_id},
        {"interval": 2.0, "timeout": 300.0},
        1,
    )
    dashboard.engine.cancel(run.id)

    # edit: the form holds what the schedule has; a new cron and no expect (the plan's events again)
    row.get_by_role("link", name="Edit").click()
    expect(page.locator("#cron")).to_have_value("10 2 * * *")
    expect(page.locator("#param-test_id")).to_have_value(test_id)
    expect(page.locator("#timeout")).to_have_value("5m")
    page.locator("#cron").fill("*/15 * * * 1-5")
    page.locator("#expect").fill("")
    page.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("*/15 * * * 1-5")
    expect(row).to_contain_text("interval 2s, timeout 5m")
    expect(row).not_to_contain_text("expected event")
    screenshot(page, "schedules.png")

    row.get_by_role("button", name="Pause").click()
    expect(row).to_have_attribute("data-paused", "yes")
    expect(row).to_contain_text("paused")
    assert schedules.next_run_time(dashboard.poller, schedule.id) is None
    row.get_by_role("button", name="Resume").click()
    expect(row).to_have_attribute("data-paused", "no")
    assert schedules.next_run_time(dashboard.poller, schedule.id) is not None

    row.locator("summary", has_text="Delete").click()
    row.get_by_role("button", name=f"Delete schedule {schedule.id[:8]}").click()
    expect(page.locator(f'tr[data-schedule="{schedule.id}"]')).to_have_count(0)
    assert dashboard.engine.store.schedule(schedule.id) is None
