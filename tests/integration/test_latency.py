"""Per-event arrival on the real state databases (SQLite, PostgreSQL): events land in a memory table over
several polls with known ``sent_at`` values; each one's first-seen time is the tick that first found it and
stays there, lateness is first seen minus sent, and a ``latency:`` bound exceeded fails the stage.

Polls are driven here one by one (``poll_group``, no scheduler), so that each poll's time is known: the
``polled_at`` of its ``tc_polls`` row is the tick's ``now`` that first-seen times are stamped with.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.settings import FAST_SETUP
from trackcheck.engine import Engine, store_plan
from trackcheck.store.repository import aware
from trackcheck.testing import MemorySource

PLAN = """
name: arrivals
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 100ms, timeout: 10m, batch_size: BATCH}
sources:
  edge: {type: memory, table: edge}
  wh: {type: memory, table: wh}
expect:
  - {event_id: e1, event: view}
  - {event_id: e2, event: cart}
  - {event_id: e3, event: buy}
stages:
  - name: edge
    source: edge
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
  - name: wh
    source: wh
    where: {test_id: "{test_id}"}
    compare: {with: edge, fields: [event]}
    time_field: sent_at
    LATENCY
"""
EVENTS = {"e1": "view", "e2": "cart", "e3": "buy"}


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "postgres_url"}[request.param])
    return url


@pytest.fixture
def engine(state_url: str) -> Iterator[Engine]:
    MemorySource.reset()
    engine = Engine(state_url, setup=FAST_SETUP)
    engine.start()
    yield engine
    assert engine.store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.shutdown()
    MemorySource.reset()


def plan_id(engine: Engine, latency: str = "", batch: int = 1000) -> int:
    text = PLAN.replace("LATENCY", latency).replace("BATCH", str(batch))
    return store_plan(engine, text, "arrivals.yaml", None)[0]


def event(test_id: str, event_id: str, sent_at: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event": EVENTS[event_id], "test_id": test_id, "sent_at": sent_at}


def land(test_id: str, event_id: str, sent_at: Any) -> datetime:
    """The event reaches both systems now; returns when (it can be first seen from the next poll on)."""
    MemorySource.tables["edge"].append(event(test_id, event_id, sent_at))
    MemorySource.tables["wh"].append(event(test_id, event_id, sent_at))
    return datetime.now(UTC)


def poll(engine: Engine, run_id: str, idx: int) -> datetime:
    """One poll of the run's stage ``idx`` (with whatever else waits in its group); returns its tick time."""
    group = engine.store.run_stages(run_id)[idx].group_key
    assert group is not None
    engine.poll_group(group)
    polled = aware(engine.store.polls(run_id)[-1].polled_at)
    assert polled is not None
    return polled


def first_seen(engine: Engine, run_id: str, idx: int) -> dict[str, datetime]:
    snapshot = engine.store.snapshots(run_id)[idx]
    assert snapshot.first_seen is not None
    return {key: datetime.fromisoformat(moment) for key, moment in snapshot.first_seen.items()}


def test_first_seen_is_kept_across_polls_and_lateness_is_first_seen_minus_sent(engine: Engine) -> None:
    run_id = engine.submit(plan_id(engine, "latency: {max: 1h, p95: 30m}"), {"test_id": "t1"})
    now = datetime.now(UTC)
    # three ways systems write when an event was sent: ISO text, epoch milliseconds, epoch seconds
    sent = {"e1": now - timedelta(seconds=40), "e2": now - timedelta(seconds=25), "e3": now - timedelta(seconds=3)}
    landed = {"e1": land("t1", "e1", sent["e1"].isoformat())}
    edge_polls = [poll(engine, run_id, 0)]
    time.sleep(0.15)
    landed["e2"] = land("t1", "e2", int(sent["e2"].timestamp() * 1000))
    edge_polls.append(poll(engine, run_id, 0))
    time.sleep(0.15)
    landed["e3"] = land("t1", "e3", sent["e3"].timestamp())
    edge_polls.append(poll(engine, run_id, 0))

    edge = engine.result(run_id).stage("edge")
    assert edge.status == "passed" and edge.latency is None  # no time_field here: first seen, no lateness
    seen = first_seen(engine, run_id, 0)
    # each event keeps the tick that first found it, not the later ones that found it again
    assert seen == {'"e1"': edge_polls[0], '"e2"': edge_polls[1], '"e3"': edge_polls[2]}
    for event_id, moment in landed.items():
        assert timedelta(0) <= seen[f'"{event_id}"'] - moment < timedelta(seconds=1)

    # the warehouse stage started when edge passed: all three are there at its first poll
    wh_poll = poll(engine, run_id, 1)
    result = engine.result(run_id)
    wh = result.stage("wh")
    assert (result.status, wh.status) == ("passed", "passed"), wh.reason
    assert first_seen(engine, run_id, 1) == {'"e1"': wh_poll, '"e2"': wh_poll, '"e3"': wh_poll}
    lateness = sorted((wh_poll - sent[e]).total_seconds() for e in sent)
    assert wh.latency is not None
    assert wh.latency["n"] == 3 and wh.latency["unreadable"] == 0
    # epoch milliseconds keep milliseconds, so every figure is exact to the millisecond
    assert wh.latency["p50"] == pytest.approx(lateness[1], abs=0.002)
    assert wh.latency["p95"] == wh.latency["p99"] == wh.latency["max"] == pytest.approx(lateness[2], abs=0.002)
    # and within a poll interval of how long each event really took to land
    for event_id in sent:
        assert 0 <= (wh_poll - landed[event_id]).total_seconds() < 1
    stored = engine.store.run_stages(run_id)[1].evidence
    assert stored is not None and stored["latency"] == wh.latency


def test_an_event_that_arrives_too_late_fails_the_stage_naming_the_bound(engine: Engine) -> None:
    run_id = engine.submit(plan_id(engine, "latency: {max: 30s}"), {"test_id": "t2"})
    now = datetime.now(UTC)
    land("t2", "e1", (now - timedelta(seconds=5)).isoformat())
    land("t2", "e2", (now - timedelta(seconds=10)).isoformat())
    poll(engine, run_id, 0)
    assert engine.result(run_id).stage("edge").status == "waiting"
    # e3 was sent two minutes ago and lands only now
    land("t2", "e3", int((now - timedelta(minutes=2)).timestamp()))
    poll(engine, run_id, 0)
    wh_poll = poll(engine, run_id, 1)

    result = engine.result(run_id)
    wh = result.stage("wh")
    assert (result.status, wh.status) == ("failed", "failed")
    late = (wh_poll - (now - timedelta(minutes=2))).total_seconds()
    assert wh.latency is not None and wh.latency["max"] == pytest.approx(late, abs=1)  # epoch seconds: whole
    assert wh.reason is not None
    assert wh.reason.startswith("max lateness 2m") and "exceeds 30s (1 of 3 events later than 30s)" in wh.reason


def test_a_late_warning_passes_and_unreadable_times_are_named(engine: Engine) -> None:
    run_id = engine.submit(plan_id(engine, "latency: {max: 1s, severity: warn}"), {"test_id": "t3"})
    now = datetime.now(UTC)
    land("t3", "e1", (now - timedelta(minutes=5)).isoformat())
    land("t3", "e2", "not a time")
    land("t3", "e3", None)
    poll(engine, run_id, 0)
    poll(engine, run_id, 1)
    wh = engine.result(run_id).stage("wh")
    assert wh.status == "passed"
    assert wh.latency is not None and (wh.latency["n"], wh.latency["unreadable"]) == (1, 2)
    assert len(wh.warnings) == 1 and wh.warnings[0].startswith("max lateness 5m")
    assert wh.reason is not None and "without a readable sent_at" in wh.reason and '"e2", "e3"' in wh.reason


def test_first_seen_times_are_kept_across_polls_in_every_chunk(engine: Engine) -> None:
    """Each record keeps the time of the poll that first found it, whatever chunk of the group its run is
    read in (the previous times come with the waiting runs, one read per chunk)."""
    plan = plan_id(engine, batch=2)
    runs = [engine.submit(plan, {"test_id": f"c{i}"}) for i in range(5)]
    for i in range(5):
        land(f"c{i}", "e1", datetime.now(UTC).isoformat())
    poll(engine, runs[0], 0)
    time.sleep(0.05)
    for i in range(5):
        land(f"c{i}", "e2", datetime.now(UTC).isoformat())
    poll(engine, runs[0], 0)
    for run_id in runs:
        first, second = (aware(p.polled_at) for p in engine.store.polls(run_id))
        assert first < second
        assert first_seen(engine, run_id, 0) == {'"e1"': first, '"e2"': second}
