"""One bad run never holds back another, and no run waits for what cannot change, on every state database.

- Records holding a NUL character or a lone surrogate (PostgreSQL refuses both; no driver encodes the
  latter) are stored escaped, with a note; the other runs of the same tick are not affected.
- A source error that cannot fix itself (an unknown table, SQL the server rejects, 401 from an API) ends
  the stage at the first poll, saying it is permanent; a transient one is retried.
- A query failing because of one run's ``where`` value (text against an integer column) ends that run only.
- A plan version that no longer loads, or a reference stage that read more than the snapshot keeps, ends
  the runs at once with the reason, instead of leaving them ``running``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.integration.http_server import HttpTestServer
from tests.settings import FAST_SETUP
from trackcheck.engine import Engine, store_plan
from trackcheck.engine.result import RunResult
from trackcheck.scheduling import Poller, SchedulerConfig
from trackcheck.testing import MemorySource

FINISHED = ("passed", "failed", "error", "cancelled")


@pytest.fixture
def poller(sql_url: str) -> Iterator[Poller]:
    """A poller in this process, its state on SQLite, PostgreSQL or MariaDB in turn."""
    MemorySource.reset()
    setup = replace(FAST_SETUP, interval=timedelta(seconds=1))
    poller = Poller(Engine(sql_url, setup=setup), SchedulerConfig(jobstore="memory")).start()
    yield poller
    poller.shutdown()
    MemorySource.reset()


@pytest.fixture
def engine(poller: Poller) -> Engine:
    """The engine of ``poller``."""
    return poller.engine


def finished(engine: Engine, run_ids: list[str], timeout: float = 20) -> dict[str, RunResult]:
    deadline = time.monotonic() + timeout
    while True:
        results = {run_id: engine.result(run_id) for run_id in run_ids}
        if all(r.status in FINISHED for r in results.values()):
            return results
        assert time.monotonic() < deadline, {k: (r.status, r.stages) for k, r in results.items()}
        time.sleep(0.1)


def plan_text(stages: str, sources: str = "  mem: {type: memory, table: events}", **defaults: Any) -> str:
    settings = {"interval": "200ms", "timeout": "20s", "backoff": "100ms"} | defaults
    return f"""
name: isolation
key: event_id
params:
  test_id: {{required: true}}
defaults: {{{", ".join(f"{k}: {v}" for k, v in settings.items())}}}
sources:
{sources}
expect:
  - {{event_id: e1, event: view}}
stages:
{stages}
"""


MEM_STAGE = """  - name: mem
    source: mem
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""


def test_poisoned_records_are_stored_escaped_and_the_other_runs_of_the_tick_pass(engine: Engine) -> None:
    plan_id, _ = store_plan(engine, plan_text(MEM_STAGE), origin="t", base_dir=None)
    MemorySource.tables["events"].extend(
        [
            {"event_id": "e1", "event": "view", "test_id": "nul", "note": "a\x00b"},
            {"event_id": "e1", "event": "view", "test_id": "surrogate", "note": "x\ud800y"},
            {"event_id": "e1", "event": "view", "test_id": "healthy", "note": "fine"},
        ]
    )
    runs = {tag: engine.submit(plan_id, {"test_id": tag}) for tag in ("nul", "surrogate", "healthy")}
    results = finished(engine, list(runs.values()))
    assert {tag: results[run].status for tag, run in runs.items()} == dict.fromkeys(runs, "passed")
    assert "shown escaped" not in (results[runs["healthy"]].stages[0].reason or "")
    for tag in ("nul", "surrogate"):
        assert "1 record(s) held a NUL character or a lone surrogate: shown escaped" in (
            results[runs[tag]].stages[0].reason or ""
        )
    notes = {tag: engine.store.snapshots(run)[0].records[0]["note"] for tag, run in runs.items()}
    assert notes == {"nul": "a\\u0000b", "surrogate": "x\\ud800y", "healthy": "fine"}


def test_a_mismatch_on_a_poisoned_value_fails_with_the_value_shown_escaped(engine: Engine) -> None:
    plan_id, _ = store_plan(engine, plan_text(MEM_STAGE), origin="t", base_dir=None)
    MemorySource.tables["events"].append({"event_id": "e1", "event": "vi\x00ew", "test_id": "bad"})
    run = engine.submit(plan_id, {"test_id": "bad"})
    result = finished(engine, [run])[run]
    assert result.status == "failed"
    assert result.stages[0].mismatches[0]["actual"] == "vi\\u0000ew"


@pytest.fixture
def warehouse(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE events (event_id text, event text, test_id integer)"))
        connection.execute(text("INSERT INTO events VALUES ('e1', 'view', 1), ('e1', 'view', 2)"))
    engine.dispose()
    return postgres_url


def sql_stage(query: str) -> str:
    return f"""  - name: wh
    source: wh
    query: {query}
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect, fields: [event]}}
"""


def test_an_unknown_table_ends_the_stage_at_the_first_poll_as_permanent(engine: Engine, warehouse: str) -> None:
    text_ = plan_text(sql_stage("SELECT * FROM evnets"), f"  wh: {{type: sql, url: '{warehouse}'}}")
    plan_id, _ = store_plan(engine, text_, origin="t", base_dir=None)
    run = engine.submit(plan_id, {"test_id": "1"})
    stage = finished(engine, [run])[run].stages[0]
    assert stage.status == "error" and stage.attempts == 1
    assert stage.error_kind == "permanent" and "permanent" in (stage.reason or "") and "evnets" in (stage.error or "")


def test_a_transient_error_is_retried_until_the_timeout(engine: Engine) -> None:
    closed = "postgresql://postgres@127.0.0.1:1/nothing"
    text_ = plan_text(sql_stage("SELECT * FROM events"), f"  wh: {{type: sql, url: '{closed}'}}", timeout="2s")
    plan_id, _ = store_plan(engine, text_, origin="t", base_dir=None)
    run = engine.submit(plan_id, {"test_id": "1"})
    stage = finished(engine, [run])[run].stages[0]
    assert stage.status == "error" and stage.attempts > 1
    assert stage.error_kind == "transient" and "still failing at the timeout" in (stage.reason or "")


def test_a_where_value_the_column_cannot_read_ends_only_its_own_run(
    engine: Engine, poller: Poller, warehouse: str
) -> None:
    text_ = plan_text(sql_stage("SELECT * FROM events"), f"  wh: {{type: sql, url: '{warehouse}'}}")
    plan_id, _ = store_plan(engine, text_, origin="t", base_dir=None)
    poller.follow()  # submit all three before the first poll, so that they share one query
    runs = {tag: engine.submit(plan_id, {"test_id": tag}) for tag in ("1", "abc", "2")}
    poller.lead()
    results = finished(engine, list(runs.values()))
    assert {tag: results[run].status for tag, run in runs.items()} == {"1": "passed", "abc": "error", "2": "passed"}
    bad = results[runs["abc"]].stages[0]
    assert bad.error_kind == "permanent" and "does not fit the column's type" in (bad.error or "")


def test_401_from_an_api_is_permanent(engine: Engine) -> None:
    with HttpTestServer() as server:
        server.reply("/events", {"error": "bad credentials"}, status=401)
        stage = """  - name: api
    source: api
    request: {path: /events}
    where: {test_id: "{test_id}"}
    compare: {with: expect}
"""
        text_ = plan_text(stage, f"  api: {{type: http, url: '{server.url}'}}")
        plan_id, _ = store_plan(engine, text_, origin="t", base_dir=None)
        run = engine.submit(plan_id, {"test_id": "1"})
        result = finished(engine, [run])[run].stages[0]
    assert result.status == "error" and result.attempts == 1 and result.error_kind == "permanent"
    assert len(server.requests) == 1


def test_retries_give_a_permanent_error_more_chances_when_the_plan_asks(engine: Engine, warehouse: str) -> None:
    text_ = plan_text(sql_stage("SELECT * FROM evnets"), f"  wh: {{type: sql, url: '{warehouse}'}}", retries=2)
    plan_id, _ = store_plan(engine, text_, origin="t", base_dir=None)
    run = engine.submit(plan_id, {"test_id": "1"})
    stage = finished(engine, [run])[run].stages[0]
    assert stage.status == "error" and stage.attempts == 3 and "2 retries used up" in (stage.reason or "")


def test_a_reference_larger_than_the_snapshot_and_not_kept_in_columns_ends_the_later_stage_at_once(
    engine: Engine,
) -> None:
    stages = (
        MEM_STAGE
        + """  - name: again
    source: mem
    where: {test_id: "{test_id}"}
    compare: {with: mem, fields: [event]}
"""
    )
    text_ = plan_text(stages, snapshot_limit=2).replace("expect:\n  - {event_id: e1, event: view}", "")
    plan_id, _ = store_plan(engine, text_, origin="t", base_dir=None)
    # a nested value: Arrow would not read these records back as they are, so they are not kept in columns
    events = [{"event_id": f"e{i}", "event": "view", "test_id": "big", "props": {"n": i}} for i in range(3)]
    MemorySource.tables["events"].extend(events)
    run = engine.submit(
        plan_id, {"test_id": "big"}, expect=[{k: v for k, v in e.items() if k != "test_id"} for e in events]
    )
    result = finished(engine, [run])[run]
    first, second = result.stages
    assert first.status == "passed" and second.status == "error" and second.attempts == 1
    assert "snapshot_limit" in (second.error or "") and second.error_kind == "permanent"


def test_runs_of_a_plan_that_no_longer_loads_end_with_the_reason(engine: Engine, tmp_path: Path) -> None:
    from trackcheck.connections import Connections
    from trackcheck.store.connections import ConnectionStore

    engine.connections = Connections({}, ConnectionStore(engine.store))
    engine.connections.save("logs", {"type": "file", "root": str(tmp_path)})
    stage = """  - name: files
    source: files
    path: "*.jsonl"
    where: {test_id: "{test_id}"}
    compare: {with: expect}
"""
    plan_id, _ = store_plan(engine, plan_text(stage, "  files: {connection: logs}"), origin="t", base_dir=None)
    run = engine.submit(plan_id, {"test_id": "gone"})
    engine.connections.delete("logs")
    engine.plan.cache_clear()
    result = finished(engine, [run])[run].stages[0]
    assert result.status == "error" and "no longer loads" in (result.reason or "") and "logs" in (result.reason or "")


def test_bad_values_in_both_halves_of_a_batch_end_only_their_runs(
    engine: Engine, poller: Poller, warehouse: str
) -> None:
    text_ = plan_text(sql_stage("SELECT * FROM events"), f"  wh: {{type: sql, url: '{warehouse}'}}")
    plan_id, _ = store_plan(engine, text_, origin="t", base_dir=None)
    poller.follow()
    runs = {tag: engine.submit(plan_id, {"test_id": tag}) for tag in ("1", "abc", "2", "xyz")}
    poller.lead()
    results = finished(engine, list(runs.values()))
    statuses = {tag: results[run].status for tag, run in runs.items()}
    assert statuses == {"1": "passed", "abc": "error", "2": "passed", "xyz": "error"}
