"""Checks that fit real tracking data, run by the real engine: an ``absent`` stage, a check of ``severity:
warn`` (the CLI's exit code, its JUnit report, ``/metrics``), and at-least-once duplicates read from a
PostgreSQL warehouse with ``compare.duplicates``.

Runs poll every 100 ms (``tests/settings.py``); in-process engines use SQLite state unless a test says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.settings import FAST_SETUP
from trackcheck.engine import Engine, store_plan
from trackcheck.engine.result import RunResult
from trackcheck.foreground import wait_for
from trackcheck.scheduling import Poller, SchedulerConfig
from trackcheck.service.metrics import Metrics
from trackcheck.testing import MemorySource

FAST = {"interval": 0.1, "timeout": 10}

OPT_OUT = """
name: opt-out
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 100ms, timeout: 10s, backoff: 100ms}
sources:
  collector: {type: memory, table: collector}
  warehouse: {type: memory, table: warehouse}
expect:
  - {event_id: e1, event: view}
stages:
  - name: collected
    source: collector
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
  - name: opted-out-user-dropped
    source: warehouse
    key: event_id
    where: {test_id: "{test_id}", user_id: u-optout}
    absent: {for: 1s}
"""


def poller_on(url: str) -> Poller:
    """A poller (and its engine) on ``url``; ``shutdown()`` stops both."""
    return Poller(Engine(url, setup=FAST_SETUP), SchedulerConfig(jobstore="memory")).start()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    MemorySource.reset()
    poller = poller_on(f"sqlite:///{tmp_path / 'state.db'}")
    yield poller.engine
    poller.shutdown()
    assert poller.scheduler is not None and not poller.scheduler.running
    MemorySource.reset()


def seconds(start: str | None, end: str | None) -> float:
    assert start is not None and end is not None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


# -- absent ------------------------------------------------------------------------------------------


def test_an_absent_stage_passes_once_for_went_by_with_nothing_matching(engine: Engine) -> None:
    plan_id = store_plan(engine, OPT_OUT, "opt-out.yaml", None)[0]
    MemorySource.tables["collector"].append({"event_id": "e1", "event": "view", "test_id": "a1"})
    # the same run's events of other users, and the opted-out user's events of another run, are allowed
    MemorySource.tables["warehouse"].extend(
        [
            {"event_id": "e1", "user_id": "u1", "test_id": "a1"},
            {"event_id": "e7", "user_id": "u-optout", "test_id": "other-run"},
        ]
    )

    result = wait_for(engine, engine.submit(plan_id, {"test_id": "a1"}, overrides=FAST), every=0.05)

    assert result.status == "passed", result.to_dict()
    absent = result.stage("opted-out-user-dropped")
    assert absent.status == "passed"
    assert absent.reason == "after 1s: nothing arrived that must not"
    assert seconds(absent.started_at, absent.finished_at) >= 1
    assert absent.attempts >= 5  # polled every 100 ms while it waited
    assert (absent.found, absent.unexpected) == (0, [])


def test_an_absent_stage_fails_at_the_first_matching_record(engine: Engine) -> None:
    plan_id = store_plan(engine, OPT_OUT, "opt-out.yaml", None)[0]
    MemorySource.tables["collector"].append({"event_id": "e1", "event": "view", "test_id": "a2"})
    run_id = engine.submit(plan_id, {"test_id": "a2"}, overrides=FAST)
    arrive = threading.Timer(
        0.3, lambda: MemorySource.tables["warehouse"].append({"event_id": "e9", "user_id": "u-optout", "test_id": "a2"})
    )
    arrive.start()

    result = wait_for(engine, run_id, every=0.05)
    arrive.join()

    assert result.status == "failed", result.to_dict()
    absent = result.stage("opted-out-user-dropped")
    assert absent.status == "failed"
    assert absent.reason == "1 record arrived that must not: key e9"
    assert absent.unexpected == ["e9"]
    assert seconds(absent.started_at, absent.finished_at) < 1  # at once, not after `for`


def test_a_timeout_shorter_than_for_fails_the_absent_stage_saying_so(engine: Engine) -> None:
    plan_id = store_plan(engine, OPT_OUT, "opt-out.yaml", None)[0]
    MemorySource.tables["collector"].append({"event_id": "e1", "event": "view", "test_id": "a3"})

    result = wait_for(engine, engine.submit(plan_id, {"test_id": "a3"}, overrides={**FAST, "timeout": 0.5}))

    absent = result.stage("opted-out-user-dropped")
    assert (result.status, absent.status) == ("failed", "failed")
    assert absent.reason is not None
    assert absent.reason.startswith("timed out after 500ms, before absent.for (1s) went by")
    assert absent.reason.endswith("give the stage a timeout of at least 1s")


# -- severity: warn ----------------------------------------------------------------------------------

WARN = """
name: sampled-funnel
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 100ms, timeout: 10s}
sources:
  collector: {type: file, path: "${WARN_DIR}/collector-*.jsonl", format: jsonl}
expect:
  - {event_id: e1, event: view, amount: 0}
  - {event_id: e2, event: add_to_cart, amount: 0}
  - {event_id: e3, event: purchase, amount: 25.5}
stages:
  - name: collector
    source: collector
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event, amount], severity: warn}
"""
WARNING = "1 field mismatch: e3.amount expected 25.5, got 52.5"


def write_events(folder: Path, test_id: str, amount: float) -> None:
    events = [
        {"event_id": "e1", "event": "view", "amount": 0},
        {"event_id": "e2", "event": "add_to_cart", "amount": 0},
        {"event_id": "e3", "event": "purchase", "amount": amount},
    ]
    with (folder / f"collector-{test_id}.jsonl").open("w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps({**event, "test_id": test_id}) + "\n")


def test_a_warning_lets_the_run_pass_exit_0_with_the_warning_printed_and_in_junit(tmp_path: Path) -> None:
    plan = tmp_path / "sampled.yaml"
    plan.write_text(WARN, encoding="utf-8")
    write_events(tmp_path, "w1", amount=52.5)
    report = tmp_path / "junit.xml"
    args = ["run", str(plan), "-p", "test_id=w1", "--db", f"sqlite:///{tmp_path / 'state.db'}", "--json"]

    done = subprocess.run(
        [sys.executable, "-m", "trackcheck", *args, "--junit", str(report)],
        env={**os.environ, "WARN_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["status"] == "passed"
    (stage,) = document["stages"]
    assert stage["status"] == "passed"
    assert stage["warnings"] == [WARNING]
    assert stage["mismatches"] == [{"key": "e3", "field": "amount", "expected": 25.5, "actual": 52.5}]
    assert f"collector: warning: {WARNING}" in done.stderr
    assert f"PASSED sampled-funnel run {document['run_id']}" in done.stderr

    suite = ET.parse(report).getroot()
    counts = (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped"))
    assert counts == ("1", "0", "0", "0")
    (case,) = suite.iter("testcase")
    assert [child.tag for child in case] == ["system-out"]
    assert case[0].text == f"warning: {WARNING}"


def test_the_same_mismatch_without_warn_fails_and_junit_has_no_system_out(tmp_path: Path) -> None:
    plan = tmp_path / "strict.yaml"
    plan.write_text(WARN.replace(", severity: warn", ""), encoding="utf-8")
    write_events(tmp_path, "w2", amount=52.5)
    report = tmp_path / "junit.xml"
    state = ["--db", f"sqlite:///{tmp_path / 'state.db'}"]

    done = subprocess.run(
        [sys.executable, "-m", "trackcheck", "run", str(plan), "-p", "test_id=w2", "--junit", str(report), *state],
        env={**os.environ, "WARN_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1, done.stderr
    (case,) = ET.parse(report).getroot().iter("testcase")
    assert [child.tag for child in case] == ["failure"]
    assert "warning:" not in done.stderr


def warning_totals(metrics: Metrics) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "trackcheck_stage_warnings_total":
                totals[(sample.labels["plan"], sample.labels["stage"])] = sample.value
    return totals


WARN_MEMORY = """
name: sampled
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 100ms, timeout: 10s}
sources:
  collector: {type: memory, table: collector}
expect:
  - {event_id: e1, event: view}
  - {event_id: e2, event: buy}
stages:
  - name: collector
    source: collector
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event], severity: warn}
"""


def passed_with_warning(engine: Engine, plan_id: int, test_id: str) -> RunResult:
    MemorySource.tables["collector"].extend(
        [
            {"event_id": "e1", "event": "view", "test_id": test_id},
            {"event_id": "e2", "event": "view", "test_id": test_id},
        ]
    )
    result = wait_for(engine, engine.submit(plan_id, {"test_id": test_id}, overrides=FAST), every=0.05)
    assert result.status == "passed", result.to_dict()
    assert result.stage("collector").warnings == ['1 field mismatch: e2.event expected "buy", got "view"']
    return result


def test_metrics_count_the_warnings_of_ended_stages_once_on_every_state_database(sql_url: str) -> None:
    MemorySource.reset()
    poller = poller_on(sql_url)
    engine = poller.engine
    try:
        plan_id = store_plan(engine, WARN_MEMORY, "sampled.yaml", None)[0]
        metrics = Metrics(engine.store)
        assert warning_totals(metrics) == {}

        passed_with_warning(engine, plan_id, "m1")
        assert warning_totals(metrics) == {("sampled", "collector"): 1}
        assert warning_totals(metrics) == {("sampled", "collector"): 1}  # a scrape counts nothing twice

        passed_with_warning(engine, plan_id, "m2")
        assert warning_totals(metrics) == {("sampled", "collector"): 2}
        # another process's scrape (a fresh collector) counts the same from the state database
        assert warning_totals(Metrics(engine.store)) == {("sampled", "collector"): 2}
    finally:
        poller.shutdown()
        MemorySource.reset()


# -- at-least-once duplicates from a SQL warehouse --------------------------------------------------

WAREHOUSE = """
name: at-least-once-{mode}
key: event_id
params:
  test_id: {{required: true}}
defaults: {{interval: 100ms, timeout: 10s}}
sources:
  warehouse: {{type: sql, url: "{url}"}}
expect:
  - {{event_id: e1, event: view, amount: 0}}
  - {{event_id: e2, event: purchase, amount: 25.5}}
stages:
  - name: warehouse
    source: warehouse
    query: SELECT event_id, event_name AS event, amount, test_id, loaded_at FROM ods_events
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect, fields: [event, amount], duplicates: {mode}}}
"""


@pytest.fixture
def warehouse(postgres_url: str) -> Iterator[str]:
    """ods_events in PostgreSQL: e2 of run `same` delivered twice unchanged (a retried load, another
    loaded_at); e2 of run `changed` delivered twice with another amount."""
    db = create_engine(postgres_url)
    with db.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE ods_events (event_id text, event_name text, amount numeric(10, 2), test_id text,"
                " loaded_at timestamptz)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO ods_events VALUES"
                " ('e1', 'view', 0, 'same', '2026-01-01 10:00Z'),"
                " ('e2', 'purchase', 25.50, 'same', '2026-01-01 10:00Z'),"
                " ('e2', 'purchase', 25.5, 'same', '2026-01-01 10:05Z'),"
                " ('e1', 'view', 0, 'changed', '2026-01-01 10:00Z'),"
                " ('e2', 'purchase', 25.5, 'changed', '2026-01-01 10:00Z'),"
                " ('e2', 'purchase', 52.5, 'changed', '2026-01-01 10:05Z')"
            )
        )
    db.dispose()
    yield postgres_url


@pytest.mark.parametrize("mode", ["fail", "allow-identical", "allow"])
def test_at_least_once_duplicates_in_a_postgresql_warehouse(engine: Engine, warehouse: str, mode: str) -> None:
    plan_id = store_plan(engine, WAREHOUSE.format(mode=mode, url=warehouse), "wh.yaml", None)[0]
    runs = {test_id: engine.submit(plan_id, {"test_id": test_id}, overrides=FAST) for test_id in ("same", "changed")}
    results = {test_id: wait_for(engine, run_id, every=0.05) for test_id, run_id in runs.items()}

    for result in results.values():
        stage = result.stage("warehouse")
        assert stage.duplicates == ["e2"], stage  # listed in every mode
        assert (stage.expected, stage.found) == (2, 3)
    same, changed = results["same"].stage("warehouse"), results["changed"].stage("warehouse")
    if mode == "fail":
        assert (same.status, same.reason) == ("failed", "duplicate key e2")
        assert changed.status == "failed" and (changed.reason or "").startswith("duplicate key e2")
    elif mode == "allow-identical":
        assert same.status == "passed", same
        assert same.reason == "all 2 expected events found and matching; 1 duplicate key allowed (identical copies)"
        assert changed.status == "failed"
        reason = changed.reason or ""
        assert reason.startswith("1 duplicate key with different values: e2.amount "), reason
        assert "25.5" in reason and "52.5" in reason
    else:
        assert same.status == "passed", same
        # every copy allowed; whichever copy the warehouse returned last is compared with what was expected
        assert "1 duplicate key allowed" in (changed.reason or "")
        assert "different values" not in (changed.reason or "")
