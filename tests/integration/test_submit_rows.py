"""Runs submitted in a batch are stored the same whichever way the state database is written: PostgreSQL
takes a batch of 50 runs or more through COPY, a smaller one (and every other backend) through INSERT."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.settings import FAST_SETUP
from trackcheck.engine import Engine, RunRequest, store_plan
from trackcheck.errors import ParamError
from trackcheck.store.repository import COPY_FROM
from trackcheck.testing import MemorySource

PLAN = """
name: rows
key: event_id
params:
  test_id: {required: true}
  region: {default: eu}
sources:
  log: {type: memory, table: log}
expect:
  - {event_id: e1, event: "view ✓", amount: 2.5}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}", region: "{region}"}
    compare: {with: expect, fields: [event, amount]}
  - name: again
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: log, fields: [event]}
"""


#: expected events that JSON writers treat differently: null, an integer beyond 64 bits, nesting, non-ASCII
ODD_EVENTS = [{"event_id": "x", "event": None, "seq": 2**70, "props": {"tags": ["✓", 1.5, True]}}]


@pytest.fixture
def engine(sql_url: str) -> Iterator[Engine]:
    MemorySource.reset()
    with Engine(sql_url, setup=FAST_SETUP) as engine:
        yield engine
    MemorySource.reset()


def stored(engine: Engine, run_id: str) -> dict[str, Any]:
    """What the state database holds of a run, as the API and the poller read it back."""
    run = engine.store.run(run_id)
    stages = engine.store.run_stages(run_id)
    params = {k: v for k, v in run.params.items() if k != "test_id"}
    return {
        "run": (run.plan_name, run.status, params, run.expect, run.overrides, run.created_at.utcoffset()),
        "stages": [(s.idx, s.name, s.status, s.group_key, s.attempts, s.errors_in_row) for s in stages],
        "where": [s.where for s in stages],
        "times": [(s.started_at is not None, s.deadline is not None) for s in stages],
    }


def test_a_large_and_a_small_batch_store_the_same_rows(engine: Engine) -> None:
    plan_id = store_plan(engine, PLAN, "rows.yaml", None)[0]
    overrides = {"interval": 5.0, "timeout": 60.0}
    big = engine.submit_many(
        plan_id,
        [
            *(RunRequest({"test_id": f"b{i}", "region": "us"}, overrides=overrides) for i in range(COPY_FROM + 10)),
            RunRequest({"test_id": "tab\there\nand 'quotes' \\ ✓"}, expect=ODD_EVENTS),
        ],
    )
    small = engine.submit_many(
        plan_id,
        [
            RunRequest({"test_id": "s0", "region": "us"}, overrides=overrides),
            RunRequest({"test_id": "tab\there\nand 'quotes' \\ ✓"}, expect=ODD_EVENTS),
        ],
    )
    first_big, first_small = stored(engine, big[0]), stored(engine, small[0])
    assert first_big["run"] == first_small["run"]
    assert first_big["stages"] == first_small["stages"]
    assert [s[:3] for s in first_big["stages"]] == [(0, "log", "waiting"), (1, "again", "pending")]
    assert first_big["where"] == [{"test_id": "b0", "region": "us"}, None]
    assert first_small["where"] == [{"test_id": "s0", "region": "us"}, None]
    assert first_big["times"] == first_small["times"] == [(True, True), (False, False)]
    # text that COPY must escape (tab, newline, backslash, quotes, non-ASCII), a JSON null, an integer beyond 64
    # bits and nesting come back as sent
    assert stored(engine, big[-1]) == stored(engine, small[-1])
    assert engine.store.run(big[-1]).params == {"test_id": "tab\there\nand 'quotes' \\ ✓", "region": "eu"}
    assert engine.store.run(big[-1]).expect == ODD_EVENTS
    # and the poller finds and reads them: one group for the big batch's first stage, the small one's run in it
    [group] = [g for g in engine.store.active_groups() if g.overrides == overrides]
    assert group.waiting == COPY_FROM + 11 and group.fresh
    MemorySource.tables["log"].append(
        {"event_id": "e1", "event": "view ✓", "amount": 2.5, "test_id": "b3", "region": "us"}
    )
    engine.poll_group(group.group_key)
    assert engine.result(big[3]).stage("log").status == "passed"
    assert engine.result(big[4]).stage("log").status == "waiting"


def test_a_wrong_run_late_in_a_large_batch_stores_none_of_it(engine: Engine) -> None:
    """On PostgreSQL the runs of a large batch are streamed into COPY as they are checked: a wrong one found
    after many were sent must still leave nothing stored, and the next batch must go through."""
    plan_id = store_plan(engine, PLAN, "rows.yaml", None)[0]
    requests = [RunRequest({"test_id": f"w{i}"}) for i in range(3000)]  # beyond the driver's 32 KB buffer
    requests[2500] = RunRequest({"test_id": "bad", "colour": "red"})
    with pytest.raises(ParamError, match=r"runs\[2500\]\.params\.colour: unknown run parameter"):
        engine.submit_many(plan_id, requests)
    assert engine.store.list_runs()[1] == 0
    assert engine.store.active_groups() == []
    ids = engine.submit_many(plan_id, [RunRequest({"test_id": f"ok{i}"}) for i in range(COPY_FROM)])
    assert engine.store.list_runs()[1] == COPY_FROM == len(set(ids))
    assert engine.result(ids[-1]).stage("log").status == "waiting"


def test_what_a_tick_reads_back_of_a_run_keeps_big_integers_exact(engine: Engine) -> None:
    """A tick parses each run's stored expect and ``where``: an integer beyond 64 bits must stay that
    integer (2**70 + 1 as a float is 2**70)."""
    plan_id = store_plan(engine, PLAN.replace("fields: [event, amount]", "fields: [event, seq]"), "rows.yaml", None)[0]
    big = 2**70 + 1
    exact = [{"event_id": "e1", "event": "view", "seq": big}]
    requests = [RunRequest({"test_id": f"n{i}"}, expect=exact) for i in range(COPY_FROM)]
    ids = engine.submit_many(plan_id, requests)
    MemorySource.tables["log"].extend(
        [
            {"event_id": "e1", "event": "view", "seq": big, "test_id": "n0", "region": "eu"},
            {"event_id": "e1", "event": "view", "seq": big - 1, "test_id": "n1", "region": "eu"},
        ]
    )
    [group] = engine.store.active_groups()
    engine.poll_group(group.group_key)
    assert engine.result(ids[0]).stage("log").status == "passed"
    assert engine.result(ids[1]).stage("log").status == "failed"
    assert engine.result(ids[2]).stage("log").status == "waiting"
