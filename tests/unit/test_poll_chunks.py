"""A poll of a group reads its waiting runs a chunk at a time, and the poller's sync finds runs that other
processes submitted without looking at every waiting run (real SQLite state, the in-memory source)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.settings import FAST_SETUP
from tests.waiting import eventually

from trackcheck.engine import Engine, store_plan
from trackcheck.engine.core import PollSummary, RunRequest
from trackcheck.errors import StoreError
from trackcheck.scheduling import Poller, SchedulerConfig, jobs
from trackcheck.store.ticks import Claim, TickWrite, Waiting
from trackcheck.testing import MemorySource

PLAN = """
name: chunks
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 58s, timeout: 30m, batch_size: 10}
sources:
  log: {type: memory, table: log}
  wh: {type: memory, table: wh}
expect:
  - {event_id: e1, event: view}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
  - name: wh
    source: wh
    where: {test_id: "{test_id}"}
    compare: {with: log, fields: [event]}
"""


def passed(engine: Engine, run_id: str) -> bool:
    return engine.result(run_id).stage("log").status == "passed"


def event(test_id: str) -> dict[str, str]:
    return {"event_id": "e1", "event": "view", "test_id": test_id}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    MemorySource.reset()
    with Engine(f"sqlite:///{tmp_path / 'state.db'}", setup=FAST_SETUP) as engine:
        yield engine
    MemorySource.reset()


def test_a_group_larger_than_a_batch_is_polled_a_chunk_at_a_time_in_one_poll(engine: Engine) -> None:
    plan_id = store_plan(engine, PLAN, "chunks.yaml", None)[0]
    ids = [f"t{i:02d}" for i in range(25)]
    MemorySource.tables["log"].extend(event(t) for t in ids[:12])  # the first 12 runs have their data
    runs = engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in ids])
    [group] = engine.store.active_groups()

    first = engine.store.waiting(group.group_key, limit=10)
    assert all(isinstance(w, Waiting) for w in first) and len(first) == 10
    rest = engine.store.waiting(group.group_key, after=first[-1].stage_id, limit=100)
    assert [w.run_id for w in first + rest] == runs, "every waiting run, in submission order, once"

    summary = engine.poll_group(group.group_key)

    assert isinstance(summary, PollSummary)
    assert (summary.polled, summary.remaining) == (25, 13)
    assert [sorted(f.filters["test_id"]) for f in MemorySource.fetches["log"]] == [ids[:10], ids[10:20], ids[20:]]
    assert len(summary.activated) == 1, "the 12 runs that passed moved on to one group of the next stage"
    assert [engine.result(r).stage("log").status for r in runs] == ["passed"] * 12 + ["waiting"] * 13
    assert all(engine.result(r).stage("log").attempts == 1 for r in runs)
    [moved] = engine.store.active_groups(summary.activated)
    assert moved.waiting == 12 and moved.fresh


def test_a_fresh_only_poll_reads_only_the_runs_never_polled(engine: Engine) -> None:
    plan_id = store_plan(engine, PLAN, "chunks.yaml", None)[0]
    engine.submit_many(plan_id, [RunRequest({"test_id": f"a{i}"}) for i in range(3)])
    [group] = engine.store.active_groups()
    assert engine.poll_group(group.group_key).polled == 3
    engine.submit(plan_id, {"test_id": "late"})
    MemorySource.fetches.clear()
    assert engine.poll_group(group.group_key, fresh_only=True).polled == 1
    assert [f.filters["test_id"] for f in MemorySource.fetches["log"]] == [["late"]]


def test_groups_started_since_finds_new_runs_until_their_first_poll(engine: Engine) -> None:
    plan_id = store_plan(engine, PLAN, "chunks.yaml", None)[0]
    engine.submit(plan_id, {"test_id": "s1"})
    [group] = engine.store.active_groups()
    assert group.latest_start is not None
    since = group.latest_start - timedelta(seconds=1)
    assert [g.group_key for g in engine.store.groups_started_since(since)] == [group.group_key]
    assert engine.store.groups_started_since(group.latest_start + timedelta(seconds=1)) == []
    engine.poll_group(group.group_key)
    assert engine.store.groups_started_since(since) == [], "polled once: the sync has nothing left to start"


def test_the_poller_picks_up_runs_another_process_submitted_between_its_full_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the incremental sync can find these runs: the full look happens when the poller takes the lead,
    before they exist, and not again during the test; the plan's interval (58 s) is far away too."""
    MemorySource.reset()
    monkeypatch.setattr(jobs, "FULL_SYNC_EVERY", timedelta(hours=1))
    db = f"sqlite:///{tmp_path / 'state.db'}"
    submitter = Engine(db, setup=FAST_SETUP).start()  # like an API worker that does not poll
    poller = Poller(Engine(db, setup=FAST_SETUP), SchedulerConfig()).start()
    try:
        plan_id = store_plan(submitter, PLAN, "chunks.yaml", None)[0]
        MemorySource.tables["log"].extend([event("x1"), event("x2")])
        first = submitter.submit(plan_id, {"test_id": "x1"})
        eventually(
            lambda: poller.engine.result(first).stage("log").status == "passed",
            "the first run was not polled",
            timeout=8.0,
        )
        # a second run joins the group the poller now knows: it gets its own prompt poll too
        second = submitter.submit(plan_id, {"test_id": "x2"})
        eventually(
            lambda: poller.engine.result(second).stage("log").status == "passed",
            "the second run was not polled",
            timeout=8.0,
        )
    finally:
        poller.shutdown()
        submitter.shutdown()
        MemorySource.reset()


def test_a_stream_of_submissions_to_one_group_is_polled_promptly_by_fewer_polls_than_runs(tmp_path: Path) -> None:
    """A prompt first poll reads every run of its group never polled: while one is scheduled and not yet
    started, another submission schedules none (the plan's interval, 58 s, is far away)."""
    MemorySource.reset()
    poller = Poller(Engine(f"sqlite:///{tmp_path / 'state.db'}", setup=FAST_SETUP), SchedulerConfig()).start()
    engine = poller.engine
    try:
        plan_id = store_plan(engine, PLAN, "chunks.yaml", None)[0]
        ids = [f"burst{i:02d}" for i in range(40)]
        MemorySource.tables["log"].extend(event(t) for t in ids)
        runs = []
        for test_id in ids:  # a steady stream, like API requests: 10 ms apart
            runs.append(engine.submit(plan_id, {"test_id": test_id}))
            time.sleep(0.01)
        for run_id in runs:
            eventually(
                lambda r=run_id: engine.result(r).stage("log").status == "passed",
                f"run {run_id} was not polled",
                timeout=8.0,
            )
        fetches = MemorySource.fetches["log"]
        assert sorted(t for f in fetches for t in f.filters["test_id"]) == ids, "each run read once"
        assert len(fetches) <= len(ids) / 2, f"{len(fetches)} polls for {len(ids)} runs submitted 10 ms apart"
    finally:
        poller.shutdown()
        MemorySource.reset()


def test_a_write_that_fails_while_the_next_chunk_is_read_fails_the_poll_and_later_chunks_are_not_lost(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are written one behind their reads, on a writer thread: an outage of the state database in the
    second chunk's write still fails the poll (the planner polls again later), the first chunk stays
    written, and the next poll reads the runs whose writes did not happen."""
    plan_id = store_plan(engine, PLAN, "chunks.yaml", None)[0]
    ids = [f"w{i:02d}" for i in range(25)]
    MemorySource.tables["log"].extend(event(t) for t in ids)
    runs = engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in ids])
    [group] = engine.store.active_groups()
    apply = engine.store.apply
    writes: list[str] = []

    def failing_second(write: TickWrite, claim: Claim | None = None) -> None:
        writes.append(threading.current_thread().name)
        if len(writes) == 2:
            raise StoreError("state database error: connection refused")
        apply(write, claim)

    monkeypatch.setattr(engine.store, "apply", failing_second)
    with pytest.raises(StoreError, match="connection refused"):
        engine.poll_group(group.group_key)

    assert writes[0].startswith("tc-chunk-writer"), "the first of several chunks is written off the tick's thread"
    statuses = [engine.result(r).stage("log").status for r in runs]
    assert statuses == ["passed"] * 10 + ["waiting"] * 15, "the failed write, and the chunk after it, not written"
    monkeypatch.setattr(engine.store, "apply", apply)
    engine.poll_group(group.group_key)
    assert [engine.result(r).stage("log").status for r in runs] == ["passed"] * 25
