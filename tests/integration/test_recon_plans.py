"""A plan stage compared by checksum: a PostgreSQL stage against a MariaDB stage, one run's rows each, reconciled
inside the databases (issue 13: ``compare: {with: STAGE, method: checksum}``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import trackcheck
from trackcheck.errors import PlanError

pytestmark = pytest.mark.integration

PLAN = """\
name: checksums
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 1s, timeout: TIMEOUT}
sources:
  ods: {type: sql, url: "PG_URL"}
  dwd: {type: sql, url: "MARIADB_URL"}
stages:
  - name: ods
    source: ods
    table: events
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [test_id]}
  - name: dwd
    source: dwd
    query: "SELECT event_id, test_id, amount, ts FROM dwd_events"
    where: {test_id: "{test_id}"}
    compare: {with: ods, method: checksum, fields: [amount, ts]}
"""


def _rows(test_id: str, n: int) -> list[dict[str, Any]]:
    return [
        {"event_id": f"{test_id}-{i}", "test_id": test_id, "amount": f"{i}.50", "ts": f"2026-12-04 10:00:{i % 60:02d}"}
        for i in range(n)
    ]


@pytest.fixture
def plan(tmp_path: Path, postgres_url: str, mariadb_url: str) -> Path:
    for url, table, ddl in (
        (postgres_url, "events", "event_id text PRIMARY KEY, test_id text, amount numeric(10,2), ts timestamp"),
        (
            mariadb_url,
            "dwd_events",
            "event_id varchar(40) PRIMARY KEY, test_id varchar(20), amount decimal(10,2), ts datetime(6)",
        ),
    ):
        engine = create_engine(url)
        with engine.begin() as c:
            c.execute(text(f"CREATE TABLE {table} ({ddl})"))
            # another test's rows, different on each side: the run's where keeps them out of its checksums
            other = _rows("other", 5)
            if table == "dwd_events":
                other = other[:2]
            c.execute(text(f"INSERT INTO {table} VALUES (:event_id, :test_id, :amount, :ts)"), other)
        engine.dispose()
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.replace("PG_URL", postgres_url).replace("MARIADB_URL", mariadb_url).replace("TIMEOUT", "20s"))
    return path


def _expected(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"event_id": r["event_id"], "test_id": r["test_id"]} for r in rows]


def _insert(url: str, table: str, rows: list[dict[str, Any]]) -> None:
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text(f"INSERT INTO {table} VALUES (:event_id, :test_id, :amount, :ts)"), rows)
    engine.dispose()


def test_the_stage_waits_for_the_missing_rows_then_passes(plan: Path, postgres_url: str, mariadb_url: str) -> None:
    rows = _rows("t1", 300)
    _insert(postgres_url, "events", rows)
    _insert(mariadb_url, "dwd_events", rows[:200])
    late = threading.Timer(2.5, _insert, (mariadb_url, "dwd_events", rows[200:]))
    late.start()
    began = time.monotonic()

    result = trackcheck.verify(plan, {"test_id": "t1"}, expect=_expected(rows), min_interval="1s")

    late.join()
    dwd = result.stages[1]
    assert result.status == "passed", result.to_dict()
    assert time.monotonic() - began >= 2.5
    assert dwd.attempts >= 2  # it waited: the first poll found 100 rows missing
    assert (dwd.expected, dwd.found) == (300, 300)
    assert dwd.reason == "checksums of 300 reference rows and 300 here; every row matches"


def test_a_changed_row_fails_naming_its_key_field_and_both_values(
    plan: Path, postgres_url: str, mariadb_url: str
) -> None:
    rows = _rows("t2", 50)
    _insert(postgres_url, "events", rows)
    changed = [dict(r, amount="99.99") if r["event_id"] == "t2-7" else r for r in rows]
    _insert(mariadb_url, "dwd_events", [*changed, *_rows("t2x", 1)])  # another test's row: not in this run

    result = trackcheck.verify(plan, {"test_id": "t2"}, expect=_expected(rows), min_interval="1s")

    dwd = result.stages[1]
    assert (result.status, dwd.status) == ("failed", "failed")
    assert dwd.mismatches == [{"key": "t2-7", "field": "amount", "expected": 7.5, "actual": 99.99}]
    assert dwd.reason == "checksums of 50 reference rows and 50 here; 1 row changed (amount)"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("compare: {with: ods, method: checksum, fields: [amount, ts]}\n    select: {test_id: test_id, x: amount}",
         "which 'select' of stage 'dwd' cannot rename"),
        ("compare: {with: expect, method: checksum}", "'with' must name an earlier sql stage"),
        ("compare: {with: ods, bucket: {by: ts}}", "compare.bucket: segments cut tables compared by checksum"),
        ("compare: {with: ods, method: checksum, bucket: {by: ts, size: 1.5s}}", "whole seconds long"),
    ],
)  # fmt: skip
def test_a_checksum_stage_the_plan_cannot_run_is_refused_when_it_loads(plan: Path, change: str, said: str) -> None:
    plan.write_text(plan.read_text().replace("compare: {with: ods, method: checksum, fields: [amount, ts]}", change))

    with pytest.raises(PlanError, match=said):
        trackcheck.verify(plan, {"test_id": "t3"})


def test_a_stage_compared_with_a_checksum_stage_by_rows_is_refused(plan: Path) -> None:
    plan.write_text(
        plan.read_text()
        + '  - name: bi\n    source: ods\n    table: events\n    where: {test_id: "{test_id}"}\n'
        + "    compare: {with: dwd}\n"
    )

    with pytest.raises(PlanError, match="stage 'dwd' may be compared by checksum and then keeps no records"):
        trackcheck.verify(plan, {"test_id": "t4"})


def test_checksum_above_compares_records_until_the_reference_read_more_rows(
    plan: Path, postgres_url: str, mariadb_url: str
) -> None:
    plan.write_text(
        plan.read_text().replace(
            "compare: {with: ods, method: checksum, fields: [amount, ts]}",
            "compare: {with: ods, fields: [amount, ts], checksum_above: 100}",
        )
    )
    small, large = _rows("s1", 40), _rows("l1", 150)
    _insert(postgres_url, "events", [*small, *large])
    changed = [dict(r, amount="0.00") if r["event_id"] in ("s1-3", "l1-3") else r for r in [*small, *large]]
    _insert(mariadb_url, "dwd_events", changed)

    by_rows = trackcheck.verify(plan, {"test_id": "s1"}, expect=_expected(small), min_interval="1s")
    by_checksum = trackcheck.verify(plan, {"test_id": "l1"}, expect=_expected(large), min_interval="1s")

    assert [s.status for s in by_rows.stages] == [s.status for s in by_checksum.stages] == ["passed", "failed"]
    assert by_rows.stages[1].mismatches == [{"key": "s1-3", "field": "amount", "expected": 3.5, "actual": 0.0}]
    assert not (by_rows.stages[1].reason or "").startswith("checksums")
    assert by_checksum.stages[1].mismatches == [{"key": "l1-3", "field": "amount", "expected": 3.5, "actual": 0.0}]
    assert by_checksum.stages[1].reason == "checksums of 150 reference rows and 150 here; 1 row changed (amount)"
