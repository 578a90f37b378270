"""The dashboard's questions to the state database, on SQLite, PostgreSQL and MariaDB: a plan's latest runs
by stage (the grid), the streak of runs that did not pass ("failing since"), and runs found by a parameter.

Runs are written with the Store's own bulk insert (as ``POST /api/runs/batch`` does), with the statuses,
times and parameters each test needs; each test gets a fresh database (tests/integration/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from trackcheck.store.history import ParamQuery, failing_streaks, plan_grid
from trackcheck.store.models import RunStage
from trackcheck.store.repository import Store, utcnow
from trackcheck.store.ticks import NewRun, NewStage

START = utcnow().replace(microsecond=0) - timedelta(days=1)


@pytest.fixture
def store(sql_url: str) -> Iterator[Store]:
    store = Store(sql_url).open()
    yield store
    store.close()


class Runs:
    """Writes runs of plans in time order: each one a minute after the previous."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.plans: dict[str, int] = {}
        self.at = START

    def add(
        self, plan: str, status: str, params: dict[str, Any] | None = None, stages: dict[str, str] | None = None
    ) -> str:
        """A run of ``plan`` ended ``status``, its stages (name: status) each taking idx + 1 seconds."""
        if plan not in self.plans:
            self.plans[plan] = self.store.save_plan(plan, f"name: {plan}", None).id
        self.at += timedelta(minutes=1)
        run_id = uuid.uuid4().hex
        stages = stages if stages is not None else {"collected": "passed", "loaded": status}
        new_stages = [
            NewStage(run_id, idx, name, stage_status, started_at=self.at)
            for idx, (name, stage_status) in enumerate(stages.items())
        ]
        run = NewRun(run_id, self.plans[plan], plan, status, params or {}, [], {}, self.at)
        self.store.create_runs([(run, new_stages)], 1)
        self._finish_stages(run_id, stages, self.at)
        return run_id

    def _finish_stages(self, run_id: str, stages: dict[str, str], at: datetime) -> None:
        with self.store.session(write=True) as s:
            for idx, (_, status) in enumerate(stages.items()):
                if status in ("passed", "failed", "error"):
                    s.execute(
                        update(RunStage)
                        .where(RunStage.run_id == run_id, RunStage.idx == idx)
                        .values(finished_at=at + timedelta(seconds=idx + 1))
                    )


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements the store sends while the caller's block runs."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def test_the_grid_is_the_latest_runs_by_stage_oldest_first_in_two_queries(store: Store) -> None:
    runs = Runs(store)
    ids = [runs.add("checkout", "passed" if i % 3 else "failed", {"test_id": f"t-{i}"}) for i in range(40)]
    other = runs.add("signup", "passed")
    # a newer plan version added a stage: only the newest run has it
    newest = runs.add("checkout", "failed", stages={"collected": "passed", "loaded": "passed", "exported": "failed"})

    with statements(store) as sent:
        grid = plan_grid(store, "checkout", 10)

    assert len([s for s in sent if s.lstrip().upper().startswith("SELECT")]) == 2
    assert [run.id for run in grid.runs] == [*ids[-9:], newest]  # oldest left, newest right
    assert other not in {run.id for run in grid.runs}
    assert grid.stages == ["collected", "loaded", "exported"]
    assert grid.runs[-1].status == "failed"
    assert grid.cells[(newest, "exported")].status == "failed"
    assert grid.cells[(newest, "exported")].seconds == 3.0
    assert (ids[-1], "exported") not in grid.cells  # the older version had no such stage
    failed_run = ids[39]  # 39 % 3 == 0: failed
    assert grid.cells[(failed_run, "loaded")].status == "failed"
    assert grid.cells[(failed_run, "collected")].status == "passed"
    assert grid.cells[(failed_run, "loaded")].seconds == 2.0
    assert grid.runs[-2].params == {"test_id": "t-39"}
    assert plan_grid(store, "nobody", 10).runs == []


def test_failing_since_is_the_first_run_that_did_not_pass_after_the_last_passed_one(store: Store) -> None:
    runs = Runs(store)
    runs.add("checkout", "failed", {"test_id": "old"})  # before the last pass: not part of the streak
    runs.add("checkout", "passed", {"test_id": "t-1"})
    first = runs.add("checkout", "failed", {"test_id": "t-2"})
    runs.add("checkout", "cancelled", {"test_id": "t-3"})  # neither breaks nor extends the streak
    runs.add("checkout", "running", {"test_id": "t-4"})
    error = runs.add("checkout", "error", {"test_id": "t-5"})
    latest = runs.add("checkout", "failed", {"test_id": "t-6"})
    runs.add("signup", "failed", {"user": "u-1"})
    runs.add("signup", "passed", {"user": "u-2"})  # its latest verdict passed: no streak
    never = runs.add("refunds", "error", {"n": 7})  # never passed: failing since its first run

    streaks = failing_streaks(store)

    assert set(streaks) == {"checkout", "refunds"}
    checkout = streaks["checkout"]
    assert checkout.first.id == first and checkout.first.params == {"test_id": "t-2"}
    assert checkout.first.created_at == START + timedelta(minutes=3)
    assert checkout.count == 3
    assert [run.id for run in checkout.latest] == [latest, error, first]  # newest first
    assert [run.params["test_id"] for run in checkout.latest] == ["t-6", "t-5", "t-2"]
    assert streaks["refunds"].first.id == never and streaks["refunds"].count == 1
    assert set(failing_streaks(store, ["signup", "refunds"])) == {"refunds"}

    runs.add("checkout", "passed", {"test_id": "t-7"})  # fixed: the streak ends
    assert "checkout" not in failing_streaks(store)


def test_a_plan_that_never_passed_fails_since_its_first_run(store: Store) -> None:
    runs = Runs(store)
    first = runs.add("checkout", "error")
    runs.add("checkout", "cancelled")
    latest = runs.add("checkout", "failed")

    streak = failing_streaks(store)["checkout"]

    assert (streak.first.id, streak.count, [run.id for run in streak.latest]) == (first, 2, [latest, first])
    assert failing_streaks(store, ["signup"]) == {}


def test_a_long_streak_lists_its_newest_runs_and_still_knows_its_first(store: Store) -> None:
    runs = Runs(store)
    runs.add("checkout", "passed")
    ids = [runs.add("checkout", "failed", {"test_id": f"t-{i}"}) for i in range(25)]

    streak = failing_streaks(store, show=5)["checkout"]

    assert streak.count == 25
    assert streak.first.id == ids[0]
    assert [run.id for run in streak.latest] == ids[::-1][:5]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("test_id=t-42", ["a"]),
        ("t-42", ["a", "c"]),  # a bare value: any parameter
        ("region=t-42", ["c"]),
        ("batch=7", ["b", "d"]),  # numbers compare as their text: 7 and "7" alike
        ("7", ["b", "d"]),
        ("test_id=t-4", []),  # the whole value, not a part of it
        ("%", []),  # no wildcard: LIKE is never used
        ("test_id=%", []),
        ("tëst-ü", ["d"]),
        ("test_id=tëst-ü", ["d"]),
        ("🦆", ["f"]),  # beyond the BMP: MariaDB compares it as utf8mb4, no collation error
        ("label=🦆", ["f"]),
        ("region=🦆", []),
        ("x'); DROP TABLE tc_runs; --", ["e"]),
        ("nobody=t-42", []),
    ],
)
def test_runs_are_found_by_a_parameter_value(store: Store, query: str, found: list[str]) -> None:
    runs = Runs(store)
    named = {
        "a": runs.add("checkout", "passed", {"test_id": "t-42", "region": "eu"}),
        "b": runs.add("checkout", "failed", {"test_id": "t-43", "batch": 7}),
        "c": runs.add("signup", "passed", {"test_id": "t-44", "region": "t-42"}),
        "d": runs.add("signup", "passed", {"test_id": "tëst-ü", "batch": "7"}),
        "e": runs.add("signup", "passed", {"test_id": "x'); DROP TABLE tc_runs; --"}),
        "f": runs.add("signup", "passed", {"label": "🦆"}),
    }
    names = {run_id: name for name, run_id in named.items()}

    runs_found, total = store.list_runs(param=ParamQuery.parse(query), limit=50)

    assert sorted(names[run.id] for run in runs_found) == found
    assert total == len(found)
    assert store.list_runs(limit=50)[1] == 6  # the table is intact


def test_a_parameter_search_combines_with_the_filters_and_pages(store: Store) -> None:
    runs = Runs(store)
    ids = [runs.add("checkout", "failed" if i % 2 else "passed", {"test_id": "t-1"}) for i in range(7)]
    runs.add("signup", "failed", {"test_id": "t-1"})
    query = ParamQuery.parse("test_id=t-1")

    page, total = store.list_runs(plan="checkout", status="failed", param=query, limit=2, offset=0)

    assert total == 3
    assert [run.id for run in page] == [ids[5], ids[3]]  # newest first
    assert [run.id for run in store.list_runs(plan="checkout", status="failed", param=query, limit=2, offset=2)[0]] == [
        ids[1]
    ]
