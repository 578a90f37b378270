"""Quiet polls: a run whose stage found nothing, polled again while still nothing is there, on every state
database. Such a poll is written with two set-based statements (``ticks.QuietPolls``) instead of a row of
values per run; these tests hold it to what a user sees of any other poll: it is recorded and counted, the
stage keeps a reason that is still true, and anything that changes (events, a note from the source, the
deadline, a cancel) is written in full again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from tests.settings import FAST_SETUP
from trackcheck.engine import Engine, store_plan
from trackcheck.engine.core import RunRequest
from trackcheck.store import database
from trackcheck.store.ticks import QuietPolls, TickWrite
from trackcheck.testing import MemorySource

PLAN = """
name: quiet
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 58s, timeout: 30m}
sources:
  log: {type: memory, table: log}
expect:
  - {event_id: e1, event: view}
  - {event_id: e2, event: click}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue({"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param])
    MemorySource.reset()
    with Engine(url, setup=FAST_SETUP) as engine:
        yield engine
    MemorySource.reset()


def only_group(engine: Engine) -> str:
    [group] = engine.store.active_groups()
    return group.group_key


def stage_row(engine: Engine, run_id: str) -> dict[str, object]:
    [stage] = engine.store.run_stages(run_id)
    return {name: getattr(stage, name) for name in ("status", "attempts", "reason", "quiet", "found", "expected")}


def polls(engine: Engine, run_id: str) -> list[tuple[str, int | None, int | None]]:
    return [(p.outcome, p.found, p.expected) for p in engine.store.polls(run_id)]


def test_polls_that_still_find_nothing_are_recorded_and_counted_and_keep_the_stage_as_it_was(
    engine: Engine,
) -> None:
    plan_id = store_plan(engine, PLAN, "quiet.yaml", None)[0]
    runs = engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in ("q1", "q2", "q3")])
    group = only_group(engine)

    assert engine.poll_group(group).polled == 3
    first = engine.result(runs[0]).stage("log")
    assert stage_row(engine, runs[0])["quiet"], "nothing found and nothing else said: the stage is quiet"
    MemorySource.tables["log"].append({"event_id": "e1", "event": "view", "test_id": "q2"})
    for _ in range(3):
        assert engine.poll_group(group).polled == 3

    # q1 and q3: four polls recorded and counted, the evidence and reason of the first one still shown
    for run_id in (runs[0], runs[2]):
        assert polls(engine, run_id) == [("waiting", 0, 2)] * 4
        shown = engine.result(run_id).stage("log")
        assert shown.attempts == 4 and shown.status == "waiting"
        assert (shown.reason, shown.missing, shown.expected, shown.found) == (
            first.reason,
            first.missing,
            2,
            0,
        )
    # q2 found one of its events: written in full, and no longer quiet
    assert polls(engine, runs[1]) == [("waiting", 0, 2)] + [("waiting", 1, 2)] * 3
    assert engine.result(runs[1]).stage("log").missing == ["e2"]
    assert not stage_row(engine, runs[1])["quiet"]


def test_events_that_arrive_after_quiet_polls_pass_the_stage(engine: Engine) -> None:
    plan_id = store_plan(engine, PLAN, "quiet.yaml", None)[0]
    run_id = engine.submit(plan_id, {"test_id": "late"})
    group = only_group(engine)
    engine.poll_group(group)
    engine.poll_group(group)
    for event_id, event in (("e1", "view"), ("e2", "click")):
        MemorySource.tables["log"].append({"event_id": event_id, "event": event, "test_id": "late"})

    engine.poll_group(group)

    result = engine.result(run_id)
    assert (result.status, result.stage("log").attempts) == ("passed", 3)
    assert polls(engine, run_id)[-1] == ("passed", 2, 2)


def test_a_quiet_stage_times_out_with_its_reason(engine: Engine) -> None:
    plan_id = store_plan(engine, PLAN, "quiet.yaml", None)[0]
    run_id = engine.submit(plan_id, {"test_id": "never"})
    group = only_group(engine)
    engine.poll_group(group)
    engine.poll_group(group)
    with engine.store.engine.begin() as connection:  # the deadline went by
        connection.execute(text("UPDATE tc_run_stages SET deadline = started_at WHERE run_id = :r"), {"r": run_id})

    engine.poll_group(group)

    stage = engine.result(run_id).stage("log")
    assert (stage.status, stage.attempts) == ("failed", 3)
    assert stage.reason is not None and stage.reason.startswith("timed out after")
    assert "e1" in stage.reason and "e2" in stage.reason, stage.reason


def test_a_stage_cancelled_between_polls_is_left_cancelled_by_a_quiet_poll(engine: Engine) -> None:
    plan_id = store_plan(engine, PLAN, "quiet.yaml", None)[0]
    kept, cancelled = engine.submit_many(plan_id, [RunRequest({"test_id": "k"}), RunRequest({"test_id": "c"})])
    group = only_group(engine)
    engine.poll_group(group)
    chunk = engine.store.waiting(group)  # read as a tick reads it, before the cancel
    engine.cancel(cancelled)

    moment = chunk[0].started_at
    assert moment is not None
    quiet = QuietPolls(moment, 1.0, tuple((w.stage_id, w.run_id) for w in chunk))
    engine.store.apply(TickWrite(quiet=[quiet]))  # the chunk's quiet polls, written after the cancel

    assert engine.result(cancelled).status == "cancelled"
    assert (stage_row(engine, cancelled)["attempts"], len(polls(engine, cancelled))) == (1, 1)
    assert (stage_row(engine, kept)["attempts"], len(polls(engine, kept))) == (2, 2)


def test_a_note_from_the_source_is_never_left_behind_in_a_quiet_stage(engine: Engine, tmp_path: Path) -> None:
    """A file with a line that does not parse: the note is in the reason; once the line is fixed, the next
    poll writes the reason without it, and only then do the polls become quiet."""
    log = tmp_path / "events.jsonl"
    log.write_text("{not json\n", encoding="utf-8")
    plan = PLAN.replace("{type: memory, table: log}", json.dumps({"type": "file", "path": str(log)}))
    plan_id = store_plan(engine, plan, "quiet.yaml", None)[0]
    run_id = engine.submit(plan_id, {"test_id": "noted"})
    group = only_group(engine)

    engine.poll_group(group)
    engine.poll_group(group)
    noted = stage_row(engine, run_id)
    assert "unparsed" in str(noted["reason"]) and not noted["quiet"]

    log.write_text(json.dumps({"event_id": "x", "test_id": "other"}) + "\n", encoding="utf-8")
    engine.poll_group(group)
    clean = stage_row(engine, run_id)
    assert "unparsed" not in str(clean["reason"]) and clean["quiet"]
    engine.poll_group(group)
    assert stage_row(engine, run_id) == {**clean, "attempts": 4}
    assert polls(engine, run_id) == [("waiting", 0, 2)] * 4


ABSENT = """
name: quiet-absent
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 58s, timeout: 30m}
sources:
  log: {type: memory, table: log}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    absent: {for: 1h}
"""


def test_an_absent_stage_is_never_quiet_its_reason_counts_the_time(engine: Engine) -> None:
    plan_id = store_plan(engine, ABSENT, "absent.yaml", None)[0]
    run_id = engine.submit(plan_id, {"test_id": "a"})
    group = only_group(engine)
    engine.poll_group(group)
    engine.poll_group(group)
    row = stage_row(engine, run_id)
    assert not row["quiet"] and row["attempts"] == 2
    assert "of 1h)" in str(row["reason"]), row["reason"]


def test_runs_waiting_before_the_upgrade_to_quiet_stages_go_on_after_it(engine: Engine) -> None:
    """Migration 0009 on a database with a waiting run: down to 0008 (``last_polled_at`` back, ``quiet``
    gone), up again; the run keeps its state, its next poll is written in full, then it is quiet."""
    plan_id = store_plan(engine, PLAN, "quiet.yaml", None)[0]
    run_id = engine.submit(plan_id, {"test_id": "old"})
    group = only_group(engine)
    engine.poll_group(group)
    config = Config()
    config.set_main_option("script_location", str(Path(database.__file__).with_name("migrations")))
    with engine.store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
    columns = {c["name"] for c in inspect(engine.store.engine).get_columns("tc_run_stages")}
    assert "last_polled_at" in columns and "quiet" not in columns

    database.migrate(engine.store.engine)

    before = stage_row(engine, run_id)
    assert (before["attempts"], before["found"], before["quiet"]) == (1, 0, False)
    engine.poll_group(group)
    assert stage_row(engine, run_id) == {**before, "attempts": 2, "quiet": True}
    engine.poll_group(group)
    assert polls(engine, run_id) == [("waiting", 0, 2)] * 3
