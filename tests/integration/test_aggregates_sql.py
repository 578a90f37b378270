"""Revenue per event type reconciled on the real PostgreSQL and MariaDB: the warehouse computes the sums
(``GROUP BY``, no event rows fetched), trackcheck compares them with the expected events; and a ``counts``
stage checked against an earlier ``counts`` stage."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Numeric, String, Table, create_engine, event, insert

from tests.settings import FAST_SETUP
from trackcheck.engine import Engine, store_plan
from trackcheck.foreground import wait_for
from trackcheck.scheduling import Poller, SchedulerConfig
from trackcheck.sources.sql import SqlSource

#: poll every 200 ms; a stage still waiting after 10 s fails
POLL = {"interval": 0.2, "timeout": 10}
metadata = MetaData()
sales = Table(
    "sales",
    metadata,
    Column("event_id", String(40), primary_key=True),
    Column("event_type", String(40)),
    Column("amount", Numeric(10, 2)),
    Column("test_id", String(40)),
)
tallies = Table(  # what a BI tool reports per event type
    "bi_tallies",
    metadata,
    Column("event_type", String(40)),
    Column("n", Integer),
    Column("test_id", String(40)),
)

REVENUE_PLAN = """
name: revenue
key: event_id
params: {test_id: {required: true}}
sources:
  warehouse: {type: sql, url: "%s"}
expect:
  - {event_id: e1, event: purchase, amount: 1000}
  - {event_id: e2, event: purchase, amount: "250.50"}
  - {event_id: e3, event: refund, amount: -20}
  - {event_id: e4, event: page_view}
stages:
  - name: warehouse
    source: warehouse
    query: SELECT event_id, event_type AS event, amount, test_id FROM sales
    where: {test_id: "{test_id}"}
    aggregates:
      with: expect
      by: event
      count: true
      sum: amount
      avg: amount
      tolerance: {amount: 1%%}
"""

COUNTS_PLAN = """
name: tallies
key: event_id
params: {test_id: {required: true}}
sources:
  warehouse: {type: sql, url: "%s"}
expect:
  - {event_id: e1, event: purchase}
  - {event_id: e2, event: purchase}
  - {event_id: e3, event: purchase}
  - {event_id: e4, event: page_view}
stages:
  - name: warehouse
    source: warehouse
    query: SELECT event_type AS event, COUNT(*) AS n, test_id FROM sales GROUP BY event_type, test_id
    where: {test_id: "{test_id}"}
    counts: {by: event, value: n, with: expect}
  - name: bi
    source: warehouse
    query: SELECT event_type AS event, n, test_id FROM bi_tallies
    where: {test_id: "{test_id}"}
    counts: {by: event, value: n, with: warehouse}
"""


@pytest.fixture(params=["postgresql", "mariadb"])
def warehouse_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on each server with the two tables, and events of another test as noise."""
    url: str = request.getfixturevalue({"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param])
    engine = create_engine(url)
    metadata.create_all(engine)
    noise = [{"event_id": f"n{i}", "event_type": "purchase", "amount": 5, "test_id": "other"} for i in range(20)]
    with engine.begin() as connection:
        connection.execute(insert(sales), noise)
    engine.dispose()
    yield url


@pytest.fixture
def engine() -> Iterator[Engine]:
    poller = Poller(Engine("sqlite://", setup=FAST_SETUP), SchedulerConfig(jobstore="memory")).start()
    yield poller.engine
    poller.shutdown()


def add(url: str, table: Table, rows: list[dict[str, Any]]) -> None:
    writer = create_engine(url)
    with writer.begin() as connection:
        connection.execute(insert(table), rows)
    writer.dispose()


def sale(event_id: str, event_type: str, amount: str | None, test_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": event_type, "amount": amount, "test_id": test_id}


class Statements:
    """What the source's engine sent about ``sales``: each statement with the number of rows it returned."""

    def __init__(self, source: SqlSource) -> None:
        self.sent: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        event.listen(source.engine, "after_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "sales" in statement:
            with self._lock:
                self.sent.append((statement, cursor.rowcount))


def test_revenue_per_event_type_is_summed_by_the_warehouse_and_checked_within_tolerance(
    warehouse_url: str, engine: Engine
) -> None:
    add(
        warehouse_url,
        sales,
        [
            sale("a1", "purchase", "1000.00", "ok"),
            sale("a2", "purchase", "245.00", "ok"),  # 1245: 5.50 short of 1250.50, within 1% (12.505)
            sale("a3", "refund", "-20.00", "ok"),
            sale("a4", "page_view", None, "ok"),
            sale("b1", "purchase", "1000.00", "bad"),
            sale("b2", "purchase", "300.00", "bad"),  # 1300: 49.50 over
            sale("b3", "refund", "-20.00", "bad"),
            sale("b4", "page_view", None, "bad"),
        ],
    )
    plan_id = store_plan(engine, REVENUE_PLAN % warehouse_url, "revenue.yaml", None)[0]
    source = engine.source(plan_id, "warehouse")
    assert isinstance(source, SqlSource)
    statements = Statements(source)

    runs = {tag: engine.submit(plan_id, {"test_id": tag}, overrides=POLL) for tag in ("ok", "bad")}
    ok, bad = (wait_for(engine, runs[tag], every=0.05) for tag in ("ok", "bad"))

    passed = ok.stage("warehouse")
    assert (ok.status, passed.reason) == ("passed", "aggregates within tolerance for 3 groups"), passed.reason
    assert (passed.expected, passed.found) == (4, 4)
    failed = bad.stage("warehouse")
    assert bad.status == "failed"
    assert failed.reason == (
        "sum(amount) of purchase: expected 1250.5, got 1300 (tolerance 1%); "
        "avg(amount) of purchase: expected 625.25, got 650 (tolerance 1%)"
    )
    assert failed.counts == [
        {"group": {"event": "purchase"}, "measure": m, "expected": e, "actual": a, "difference": d}
        for m, e, a, d in [("sum(amount)", 1250.5, 1300, 49.5), ("avg(amount)", 625.25, 650, 24.75)]
    ]
    # the database did the work: every statement grouped, and returned one row per (group, run), never events
    assert statements.sent
    for statement, rows in statements.sent:
        assert "GROUP BY" in statement and "SUM(tc_q.amount) AS tc_sum_amount" in statement, statement
        assert rows in (3, 6), (rows, statement)  # 3 groups per run (polled alone or both at once); 4 events
    snapshot = engine.store.snapshots_for([runs["ok"]], 0)[runs["ok"]]
    assert sorted(r["event"] for r in snapshot.records) == ["page_view", "purchase", "refund"]
    purchase = next(r for r in snapshot.records if r["event"] == "purchase")
    assert "event_id" not in purchase
    assert (purchase["tc_count"], Decimal(str(purchase["tc_sum_amount"])), purchase["tc_n_amount"]) == (2, 1245, 2)
    assert source.engine.pool.checkedout() == 0, "a fetch left a connection checked out"  # type: ignore[attr-defined]


def test_a_counts_stage_checked_against_an_earlier_counts_stage_compares_the_counts(
    warehouse_url: str, engine: Engine
) -> None:
    for test_id in ("t", "x"):  # both runs' events reach the warehouse: 3 purchases, 1 page view
        events = [sale(f"{test_id}{i}", "purchase", "1", test_id) for i in range(3)]
        add(warehouse_url, sales, [*events, sale(f"{test_id}3", "page_view", None, test_id)])
    add(
        warehouse_url,
        tallies,
        [
            {"event_type": "purchase", "n": 3, "test_id": "t"},
            {"event_type": "page_view", "n": 1, "test_id": "t"},
            {"event_type": "purchase", "n": 4, "test_id": "x"},  # one purchase too many
            {"event_type": "page_view", "n": 1, "test_id": "x"},
        ],
    )
    plan_id = store_plan(engine, COUNTS_PLAN % warehouse_url, "tallies.yaml", None)[0]

    runs = [engine.submit(plan_id, {"test_id": tag}, overrides=POLL) for tag in ("t", "x")]
    good, wrong = (wait_for(engine, run, every=0.05) for run in runs)

    assert good.status == "passed", good.to_dict()
    assert good.stage("bi").reason == "counts match for 2 groups"
    assert (good.stage("bi").expected, good.stage("bi").found) == (4, 4)
    assert wrong.stage("bi").status == "failed", wrong.to_dict()
    assert wrong.stage("bi").reason == "1 group above the expected count: event=purchase 4 of 3"
