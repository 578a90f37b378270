"""Retention on every state database: ``Store.prune`` deletes old polls and old ended runs (with their stages,
polls and snapshots) in bounded batches, keeps recent ones and running runs; the poller's ``tc:prune`` job
runs it every ``[retention] every``; ``off`` keeps everything.

Rows are made by an Engine and the Store, then backdated with UPDATE statements.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.settings import FAST_SETUP
from trackcheck.engine.core import Engine, store_plan
from trackcheck.scheduling import Poller, SchedulerConfig, jobs
from trackcheck.scheduling.config import CONTROL
from trackcheck.service.config import load_config
from trackcheck.store.models import Poll, Run, RunStage, Snapshot
from trackcheck.store.repository import PruneCounts, Retention, utcnow
from trackcheck.store.ticks import PollRow, SnapshotRow, TickWrite

PLAN = """
name: retained
key: id
sources:
  events: {type: file, path: "EVENTS/*.jsonl", format: jsonl}
expect:
  - {id: 1}
stages:
  - name: seen
    source: events
    compare: {with: expect}
  - name: again
    source: events
    compare: {with: seen}
"""
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
QUARTER = timedelta(days=90)


@pytest.fixture
def engine(sql_url: str) -> Iterator[Engine]:
    engine = Engine(sql_url, setup=FAST_SETUP).start()
    yield engine
    engine.shutdown()


def _plan(engine: Engine, tmp_path: Path) -> int:
    plan_id, _ = store_plan(engine, PLAN.replace("EVENTS", str(tmp_path)), origin="retained.yaml", base_dir=None)
    return plan_id


def _run(engine: Engine, plan_id: int, *, polls: int = 0, snapshot: bool = False, ended: bool = False) -> str:
    """A run of two stages with ``polls`` polls of stage 0 (taken now), a snapshot of it, cancelled if ``ended``."""
    run_id = engine.submit(plan_id, {})
    now = utcnow()
    poll = PollRow(run_id, 0, now, "waiting", found=0, expected=1, duration_ms=1.0, error=None, error_kind=None)
    write = TickWrite(polls=[poll] * polls)
    if snapshot:
        write.snapshots.append(
            SnapshotRow(run_id, 0, records=[{"id": 1}], total=1, truncated=False, taken_at=now, first_seen=None)
        )
    engine.store.apply(write)
    if ended:
        assert engine.store.finish_run(run_id, "cancelled")
    return run_id


def _backdate_run(engine: Engine, run_id: str, age: timedelta) -> None:
    with engine.store.session(write=True) as s:
        s.execute(update(Run).where(Run.id == run_id).values(finished_at=utcnow() - age))


def _backdate_polls(engine: Engine, run_id: str, age: timedelta, limit: int | None = None) -> None:
    with engine.store.session(write=True) as s:
        ids = list(s.scalars(select(Poll.id).where(Poll.run_id == run_id).order_by(Poll.id).limit(limit)))
        s.execute(update(Poll).where(Poll.id.in_(ids)).values(polled_at=utcnow() - age))


def _count(engine: Engine, table: Any, run_id: str) -> int:
    column = table.id if table is Run else table.run_id
    with engine.store.session() as s:
        return s.scalar(select(func.count()).select_from(table).where(column == run_id)) or 0


def _rows(engine: Engine, run_id: str) -> tuple[int, int, int, int]:
    return tuple(_count(engine, table, run_id) for table in (Run, RunStage, Poll, Snapshot))  # type: ignore[return-value]


def test_prune_deletes_old_polls_and_old_ended_runs_only(engine: Engine, tmp_path: Path) -> None:
    plan_id = _plan(engine, tmp_path)
    old = _run(engine, plan_id, polls=2, snapshot=True, ended=True)
    recent = _run(engine, plan_id, polls=3, snapshot=True, ended=True)
    running = _run(engine, plan_id, polls=3)
    _backdate_run(engine, old, QUARTER + DAY)
    _backdate_polls(engine, old, QUARTER + DAY)
    _backdate_run(engine, recent, DAY)
    _backdate_polls(engine, recent, WEEK + DAY, limit=2)
    _backdate_polls(engine, running, WEEK + DAY, limit=2)
    # a running run is never deleted, whatever its timestamps say
    _backdate_run(engine, running, QUARTER + DAY)
    # nor an ended one whose webhook notification is still due
    pending = _run(engine, plan_id, ended=True)
    _backdate_run(engine, pending, QUARTER + DAY)
    with engine.store.session(write=True) as s:
        s.execute(update(Run).where(Run.id == pending).values(notify_due=utcnow()))

    now = utcnow()
    counts = engine.store.prune(now - WEEK, now - QUARTER, batch=2)

    assert counts == PruneCounts(runs=1, stages=2, polls=6, snapshots=1)
    assert _rows(engine, old) == (0, 0, 0, 0)
    assert _rows(engine, recent) == (1, 2, 1, 1)
    assert _rows(engine, running) == (1, 2, 1, 0)
    assert _rows(engine, pending) == (1, 2, 0, 0)
    assert engine.store.prune(now - WEEK, now - QUARTER, batch=2) == PruneCounts()


def test_prune_works_in_batches(engine: Engine, tmp_path: Path) -> None:
    plan_id = _plan(engine, tmp_path)
    waiting = _run(engine, plan_id, polls=5)
    _backdate_polls(engine, waiting, WEEK + DAY)
    ended = [_run(engine, plan_id, polls=1, snapshot=True, ended=True) for _ in range(5)]
    for run_id in ended:
        _backdate_run(engine, run_id, QUARTER + DAY)

    now = utcnow()
    assert engine.store.prune(now - WEEK, None, batch=2) == PruneCounts(polls=5)
    assert engine.store.prune(None, now - QUARTER, batch=2) == PruneCounts(runs=5, stages=10, polls=5, snapshots=5)
    assert all(_rows(engine, run_id) == (0, 0, 0, 0) for run_id in ended)
    assert _rows(engine, waiting) == (1, 2, 0, 0)


def test_off_keeps_everything(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./trackcheck.toml
    plan_id = _plan(engine, tmp_path)
    run_id = _run(engine, plan_id, polls=2, snapshot=True, ended=True)
    _backdate_run(engine, run_id, timedelta(days=3000))
    _backdate_polls(engine, run_id, timedelta(days=3000))

    assert engine.store.prune(None, None) == PruneCounts()
    retention = load_config(
        None, env={"TRACKCHECK_RETENTION_POLLS": "off", "TRACKCHECK_RETENTION_RUNS": "0"}
    ).retention_policy()
    assert not retention.enabled
    assert Poller(engine, retention=retention).prune() == PruneCounts()
    assert _rows(engine, run_id) == (1, 2, 2, 1)


def test_the_poller_schedules_and_runs_the_prune_job(
    sql_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "trackcheck.toml"
    config.write_text('[retention]\nruns = "30d"\n', encoding="utf-8")
    retention = load_config(config, env={"TRACKCHECK_RETENTION_EVERY": "3m"}).retention_policy()
    assert retention == Retention(polls=WEEK, runs=timedelta(days=30), every=timedelta(minutes=3))

    standby_poller = Poller(Engine(sql_url, setup=FAST_SETUP), SchedulerConfig(), retention=retention)
    standby_poller.start(paused=True)
    standby = standby_poller.engine
    try:
        assert standby_poller.scheduler is not None
        assert standby_poller.scheduler.get_job(jobs.PRUNE_ID) is None  # a standby does not prune
        standby_poller.lead()
        job = standby_poller.scheduler.get_job(jobs.PRUNE_ID)
        assert job is not None
        assert job.trigger.interval == timedelta(minutes=3)
        assert job.executor == CONTROL
        assert job.func_ref == jobs.PRUNE_JOB  # the shared job store holds a reference, run by the leader

        standby_poller.follow()  # no poll of the run below may add rows between its making and the prune
        plan_id = _plan(standby, tmp_path)
        run_id = _run(standby, plan_id, polls=1, ended=True)
        _backdate_run(standby, run_id, timedelta(days=31))
        with caplog.at_level(logging.INFO, logger="trackcheck.scheduler"):
            jobs.prune()  # what the job calls: it prunes with the bound poller's retention
            assert _rows(standby, run_id) == (0, 0, 0, 0)
            assert standby_poller.prune() == PruneCounts()
        lines = [r.getMessage() for r in caplog.records if r.name == "trackcheck.scheduler"]
        assert lines == ["retention: deleted 1 run(s) with 2 stage(s) and 0 snapshot(s), and 1 poll(s)"]
    finally:
        standby_poller.shutdown()

    # a poller configured with retention off removes the job a former one left in the shared job store
    keeper = Poller(Engine(sql_url, setup=FAST_SETUP), SchedulerConfig(), retention=Retention()).start()
    try:
        assert keeper.scheduler is not None
        assert keeper.scheduler.get_job(jobs.PRUNE_ID) is None
    finally:
        keeper.shutdown()


def test_retention_config_defaults_and_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./trackcheck.toml
    policy = load_config(None, env={}).retention_policy()
    assert policy == Retention(polls=WEEK, runs=QUARTER, every=timedelta(minutes=10))
    policy = load_config(None, env={"TRACKCHECK_RETENTION_POLLS": "0", "TRACKCHECK_RETENTION_RUNS": "off"})
    assert policy.retention_policy() == Retention(polls=None, runs=None, every=timedelta(minutes=10))
