"""The polling engine end to end on the in-memory fake source: real APScheduler, real SQLite state."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from tests.settings import FAST_SETUP
from tests.waiting import eventually

from trackcheck.engine import Engine, store_plan
from trackcheck.errors import ParamError
from trackcheck.foreground import wait_for
from trackcheck.scheduling import Poller, SchedulerConfig
from trackcheck.testing import MemorySource

PLAN = """
name: mem
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 58s, timeout: 30m, backoff: 100ms}
sources:
  log: {type: memory, table: log}
  wh: {type: memory, table: wh}
expect:
  - {event_id: e1, event: view, amount: 0}
  - {event_id: e2, event: buy, amount: 25.5}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event, amount]}
  - name: wh
    source: wh
    where: {test_id: "{test_id}"}
    compare: {with: log, fields: [event, amount]}
"""
FAST = {"interval": 0.2, "timeout": 3}


def rows(test_id: str, **changes: object) -> list[dict[str, object]]:
    base = [
        {"event_id": "e1", "event": "view", "amount": 0, "test_id": test_id},
        {"event_id": "e2", "event": "buy", "amount": "25.50", "test_id": test_id},
    ]
    return [{**row, **changes} if row["event_id"] == changes.get("event_id") else row for row in base]


@pytest.fixture
def engine() -> Iterator[Engine]:
    MemorySource.reset()
    poller = Poller(Engine("sqlite://", setup=FAST_SETUP), SchedulerConfig(jobstore="memory")).start()
    yield poller.engine
    poller.shutdown()
    assert poller.scheduler is not None and not poller.scheduler.running
    MemorySource.reset()


@pytest.fixture
def plan_id(engine: Engine) -> int:
    return store_plan(engine, PLAN, "mem.yaml", None)[0]


def later(seconds: float, action) -> None:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()


def test_late_data_is_polled_until_every_stage_passed(engine: Engine, plan_id: int) -> None:
    run_id = engine.submit(plan_id, {"test_id": "t1"}, overrides=FAST)
    later(0.5, lambda: MemorySource.tables["log"].extend(rows("t1")))
    later(1.0, lambda: MemorySource.tables["wh"].extend(rows("t1")))
    result = wait_for(engine, run_id, every=0.05)
    assert result.status == "passed", result.to_dict()
    log, wh = result.stages
    assert log.status == wh.status == "passed"
    assert log.attempts >= 2 and wh.attempts >= 2  # polled while waiting, then passed
    assert (log.found, log.expected) == (2, 2)
    polls = engine.store.polls(run_id)
    assert [p.outcome for p in polls if p.stage_idx == 0][-1] == "passed"
    assert {p.outcome for p in polls if p.stage_idx == 0} == {"waiting", "passed"}


def test_changed_field_fails_naming_key_field_and_both_values(engine: Engine, plan_id: int) -> None:
    MemorySource.tables["log"].extend(rows("t2"))
    MemorySource.tables["wh"].extend(rows("t2", event_id="e2", amount=26))
    result = wait_for(engine, engine.submit(plan_id, {"test_id": "t2"}, overrides=FAST), every=0.05)
    assert result.status == "failed"
    assert result.stage("log").status == "passed"
    wh = result.stage("wh")
    assert wh.status == "failed"
    assert wh.mismatches == [
        {"key": "e2", "field": "amount", "expected": "25.50", "actual": 26}
    ]  # as the log stage read it


def test_event_that_never_arrives_fails_at_the_timeout_as_missing(engine: Engine, plan_id: int) -> None:
    MemorySource.tables["log"].extend(rows("t3")[:1])
    started = time.monotonic()
    result = wait_for(
        engine,
        engine.submit(plan_id, {"test_id": "t3"}, overrides={"interval": 0.2, "timeout": 1}),
        every=0.05,
    )
    assert time.monotonic() - started >= 1
    log = result.stage("log")
    assert (result.status, log.status, log.missing) == ("failed", "failed", ["e2"])
    assert "timed out after 1s" in (log.reason or "")
    assert result.stage("wh").status == "skipped"


def test_runs_at_the_same_stage_share_one_query_and_get_their_own_rows(engine: Engine, plan_id: int) -> None:
    ids = [f"b{i}" for i in range(40)]
    for test_id in ids[::2]:  # only every other run has its data
        MemorySource.tables["log"].extend(rows(test_id))
    runs = [engine.submit(plan_id, {"test_id": t}, overrides={"interval": 0.3, "timeout": 30}) for t in ids]
    # the prompt first polls (each run's, or one for several: they wait 50 ms for more) read all 40; after
    # them, only the 20 runs still waiting are read, all in one query per tick
    eventually(lambda: all(engine.result(r).stage("log").attempts > 0 for r in runs), "a run was never polled")
    MemorySource.fetches.clear()
    time.sleep(1.0)
    results = [engine.result(r) for r in runs]
    for test_id, result in zip(ids, results, strict=True):
        expected = "passed" if int(test_id[1:]) % 2 == 0 else "waiting"
        assert result.stage("log").status == expected, test_id
    log_fetches = MemorySource.fetches["log"]
    assert log_fetches, "the log stage was polled"
    # every regular tick queried once for all waiting runs, with their test_ids as one list
    assert max(len(f.filters["test_id"]) for f in log_fetches) == 20
    assert len(log_fetches) <= 5


def test_a_new_run_is_polled_promptly_not_an_interval_later(engine: Engine, plan_id: int) -> None:
    MemorySource.tables["log"].extend(rows("p1"))
    run_id = engine.submit(plan_id, {"test_id": "p1"})  # the plan's 58s interval
    deadline = time.monotonic() + 5
    while engine.result(run_id).stage("log").attempts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.result(run_id).stage("log").status == "passed"


def test_source_errors_are_retried_then_reported_as_error(engine: Engine) -> None:
    plan_id = store_plan(engine, PLAN.replace("backoff: 100ms", "backoff: 100ms, retries: 2"), "mem.yaml", None)[0]
    MemorySource.failing.add("log")
    result = wait_for(
        engine,
        engine.submit(plan_id, {"test_id": "x"}, overrides={"interval": 30, "timeout": 20}),
        every=0.05,
    )
    log = result.stage("log")
    assert (result.status, log.status, log.attempts) == ("error", "error", 3)
    assert "2 retries used up" in (log.reason or "") and "table 'log' is failing" in (log.error or "")
    outcomes = [p.outcome for p in engine.store.polls(result.run_id)]
    assert outcomes == ["error", "error", "error"]  # back-off retries, well before the 30s interval


def test_source_recovering_within_retries_passes(engine: Engine, plan_id: int) -> None:
    MemorySource.tables["log"].extend(rows("r1"))
    MemorySource.tables["wh"].extend(rows("r1"))
    MemorySource.failing.add("log")
    later(0.4, lambda: MemorySource.failing.discard("log"))
    result = wait_for(
        engine,
        engine.submit(plan_id, {"test_id": "r1"}, overrides={"interval": 30, "timeout": 20}),
        every=0.05,
    )
    assert result.status == "passed"
    assert "error" in [p.outcome for p in engine.store.polls(result.run_id)]


def test_cancel_keeps_what_was_verified(engine: Engine, plan_id: int) -> None:
    MemorySource.tables["log"].extend(rows("c1"))
    run_id = engine.submit(plan_id, {"test_id": "c1"}, overrides={"interval": 0.2, "timeout": 60})
    deadline = time.monotonic() + 5
    while engine.result(run_id).stage("log").status != "passed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.cancel(run_id)
    result = engine.result(run_id)
    assert result.status == "cancelled"
    assert [s.status for s in result.stages] == ["passed", "skipped"]
    assert not engine.cancel(run_id)


def test_bad_run_input_stores_nothing(engine: Engine, plan_id: int) -> None:
    with pytest.raises(ParamError, match="test_id"):
        engine.submit(plan_id, {})
    with pytest.raises(ParamError, match="expect"):
        engine.submit(plan_id, {"test_id": "a"}, expect=[{"event": "no key"}])
    assert engine.store.list_runs()[1] == 0


def test_snapshot_keeps_what_each_stage_read(engine: Engine, plan_id: int) -> None:
    MemorySource.tables["log"].extend(rows("s1"))
    MemorySource.tables["wh"].extend(rows("s1"))
    result = wait_for(engine, engine.submit(plan_id, {"test_id": "s1"}, overrides=FAST), every=0.05)
    assert result.ok
    snapshots = engine.store.snapshots(result.run_id)
    assert sorted(r["event_id"] for r in snapshots[0].records) == ["e1", "e2"]
    assert snapshots[1].total == 2 and not snapshots[1].truncated


def test_an_at_stage_polls_once_at_its_instant_and_reports_that_wait(engine: Engine) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=1.5)).replace(microsecond=0).isoformat()
    plan = PLAN.replace(
        "    compare: {with: expect, fields: [event, amount]}",
        f"    compare: {{with: expect, fields: [event, amount]}}\n    at: '{at}'",
        1,
    )
    plan_id = store_plan(engine, plan, "mem.yaml", None)[0]
    result = wait_for(engine, engine.submit(plan_id, {"test_id": "at1"}), every=0.05)
    log = result.stage("log")
    assert (log.status, log.attempts, log.missing) == ("failed", 1, ["e1", "e2"])
    assert log.reason is not None and log.reason.startswith("timed out after ")
    assert "30m" not in log.reason, "the plan's timeout does not apply to an `at` stage"
