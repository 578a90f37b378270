"""The checksum drill-down finds exactly the differences, reading rows only where segments differ (issue 13)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from trackcheck.errors import PlanError
from trackcheck.recon import Reconciliation, ReconSpec, Table, drill, reconcile
from trackcheck.sources.sql import SqlOptions, SqlSource

pytestmark = pytest.mark.integration

Row = tuple[Any, ...]


def _rows(n: int, seed: int = 7) -> list[Row]:
    rng = random.Random(seed)
    return [(i, f"user{rng.randrange(1000)}", round(rng.uniform(0, 500), 2), rng.choice(["view", "click", "购买"]))
            for i in range(1, n + 1)]  # fmt: skip


def _truth(rows: list[Row], seed: int = 11, each: int = 10) -> tuple[list[Row], set[int], set[int], set[int]]:
    """``rows`` with ``each`` rows deleted, changed (amount) and added: (the new rows, missing, changed, unexpected)."""
    rng = random.Random(seed)
    chosen = rng.sample([r[0] for r in rows], 2 * each)
    missing, changed = set(chosen[:each]), set(chosen[each:])
    top = max(r[0] for r in rows)
    unexpected = {top + 1 + rng.randrange(10 * len(rows)) for _ in range(each)}
    while len(unexpected) < each:
        unexpected.add(top + 1 + rng.randrange(10 * len(rows)))
    new = [(r[0], r[1], r[2] + 1, r[3]) if r[0] in changed else r for r in rows if r[0] not in missing]
    new += [(k, "late", 1.0, "view") for k in sorted(unexpected)]
    return new, missing, changed, unexpected


def _sqlite(
    path: Path, rows: list[Row], ddl: str = "id integer PRIMARY KEY, uid text, amount decimal(10,2), event text"
) -> str:
    with sqlite3.connect(path) as c:
        c.execute(f"CREATE TABLE events ({ddl})")
        if rows:
            c.executemany(f"INSERT INTO events VALUES ({', '.join('?' * len(rows[0]))})", rows)
    return f"sqlite:///{path}"


@pytest.fixture
def sources() -> Iterator[Callable[[str], SqlSource]]:
    made: list[SqlSource] = []

    def make(url: str) -> SqlSource:
        made.append(SqlSource(f"s{len(made)}", SqlOptions(url=url)))
        return made[-1]

    yield make
    for source in made:
        source.close()


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments small enough that a few thousand rows take three levels or more."""
    monkeypatch.setattr(drill, "MAX_SEGMENTS", 16)
    monkeypatch.setattr(drill, "FACTOR", 4)
    monkeypatch.setattr(drill, "LEAF_ROWS", 4)


def _found(result: Reconciliation) -> tuple[set[Any], set[Any], set[Any]]:
    return set(result.missing), {m["key"] for m in result.mismatches}, set(result.unexpected)


@pytest.mark.usefixtures("small_segments")
def test_postgresql_against_mariadb_finds_exactly_what_changed_over_several_levels(
    postgres_url: str, mariadb_url: str, sources: Callable[[str], SqlSource]
) -> None:
    rows = _rows(6000)
    changed_rows, missing, changed, unexpected = _truth(rows)
    for url, data, ddl in (
        (postgres_url, rows, "id bigint PRIMARY KEY, uid text, amount numeric(10,2), event text"),
        (mariadb_url, changed_rows, "id bigint PRIMARY KEY, uid varchar(20), amount decimal(10,2), event varchar(10)"),
    ):
        engine = create_engine(url)
        with engine.begin() as c:
            c.execute(text(f"CREATE TABLE events ({ddl})"))
            c.execute(
                text("INSERT INTO events VALUES (:a, :b, :c, :d)"), [dict(zip("abcd", r, strict=True)) for r in data]
            )
        engine.dispose()

    result = reconcile(
        Table(sources(postgres_url), "events"), Table(sources(mariadb_url), "events"), ReconSpec(["id"], limit=0)
    )

    assert _found(result) == (missing, changed, unexpected)
    assert {m["field"] for m in result.mismatches} == {"amount"}
    assert result.differences == {"missing": 10, "unexpected": 10, "changed": 10, "duplicates": 0}
    assert result.stats["levels"] >= 3
    # the drill-down read the rows of differing segments only: a small share of the table's 6,000
    assert result.stats["rows_read"]["left"] < 1500, result.stats


@pytest.mark.usefixtures("small_segments")
def test_text_keys_are_cut_by_their_hash_and_composite_keys_work(
    tmp_path: Path, sources: Callable[[str], SqlSource]
) -> None:
    rows = [(f"e-{i:05d}", "web" if i % 2 else "app", i * 0.5) for i in range(3000)]
    right = [r for r in rows if r[0] != "e-00042"] + [("e-99999", "web", 1.0)]
    right = [(r[0], r[1], 7.0) if r[0] == "e-01234" else r for r in right]
    ddl = "event_id text, platform text, amount real, PRIMARY KEY (event_id, platform)"

    result = reconcile(
        Table(sources(_sqlite(tmp_path / "l.db", rows, ddl)), "events"),
        Table(sources(_sqlite(tmp_path / "r.db", right, ddl)), "events"),
        ReconSpec(["event_id", "platform"]),
    )

    assert result.missing == [{"event_id": "e-00042", "platform": "app"}]
    assert result.unexpected == [{"event_id": "e-99999", "platform": "web"}]
    assert [(m["key"], m["field"], m["expected"], m["actual"]) for m in result.mismatches] == [
        ({"event_id": "e-01234", "platform": "app"}, "amount", 617.0, 7.0)
    ]
    assert result.stats["levels"] >= 2


def test_counts_are_complete_when_the_lists_stop_at_the_limit(
    tmp_path: Path, sources: Callable[[str], SqlSource]
) -> None:
    rows = _rows(2000)
    changed_rows, missing, _, unexpected = _truth(rows, each=30)

    result = reconcile(
        Table(sources(_sqlite(tmp_path / "l.db", rows)), "events"),
        Table(sources(_sqlite(tmp_path / "r.db", changed_rows)), "events"),
        ReconSpec(["id"], limit=5),
    )

    assert result.differences == {"missing": 30, "unexpected": 30, "changed": 30, "duplicates": 0}
    assert (len(result.missing), len(result.unexpected), len(result.mismatches)) == (5, 5, 5)
    assert set(result.missing) <= missing and set(result.unexpected) <= unexpected
    assert result.reason == "the tables differ: 30 missing, 30 unexpected, 30 changed"


def test_a_tolerance_lets_close_values_pass_and_still_finds_the_far_ones(
    tmp_path: Path, sources: Callable[[str], SqlSource]
) -> None:
    rows = [(1, "u", 10.00, "view"), (2, "u", 20.00, "view"), (3, "u", 30.00, "view")]
    right = [(1, "u", 10.01, "view"), (2, "u", 20.50, "view"), (3, "u", 30.00, "view")]
    left_url, right_url = _sqlite(tmp_path / "l.db", rows), _sqlite(tmp_path / "r.db", right)

    strict = reconcile(Table(sources(left_url), "events"), Table(sources(right_url), "events"), ReconSpec(["id"]))
    tolerant = reconcile(
        Table(sources(left_url), "events"),
        Table(sources(right_url), "events"),
        ReconSpec(["id"], tolerance={"amount": 0.02}),
    )

    assert [m["key"] for m in strict.mismatches] == [1, 2]
    assert [(m["key"], m["expected"], m["actual"]) for m in tolerant.mismatches] == [(2, 20.0, 20.5)]
    assert tolerant.differences["changed"] == 1


def test_duplicates_and_where_and_empty_tables(tmp_path: Path, sources: Callable[[str], SqlSource]) -> None:
    rows = [(1, "u", 1.0, "view"), (2, "u", 2.0, "view"), (3, "u", 3.0, "click")]
    doubled = [*rows, (2, "u", 2.0, "view")]
    ddl = "id integer, uid text, amount decimal(10,2), event text"  # no key constraint: a loader may repeat rows
    left = Table(sources(_sqlite(tmp_path / "l.db", rows, ddl)), "events")
    right = Table(sources(_sqlite(tmp_path / "r.db", doubled, ddl)), "events")

    repeated = reconcile(left, right, ReconSpec(["id"]))
    views = reconcile(
        Table(left.source, "events", where="event = 'click'"), Table(right.source, "events", where="event = 'click'"),
        ReconSpec(["id"]),
    )  # fmt: skip
    empty = Table(sources(_sqlite(tmp_path / "e.db", [], ddl)), "events")
    nothing = reconcile(empty, empty, ReconSpec(["id"]))
    all_missing = reconcile(left, empty, ReconSpec(["id"]))

    assert (repeated.verdict, repeated.duplicates) == ("failed", [{"side": "right", "key": 2}])
    assert (views.verdict, views.left.rows, views.right.rows) == ("passed", 1, 1)
    assert (nothing.verdict, nothing.left.rows) == ("passed", 0)
    assert sorted(all_missing.missing) == [1, 2, 3]


def test_what_cannot_be_compared_is_named(tmp_path: Path, sources: Callable[[str], SqlSource]) -> None:
    url = _sqlite(tmp_path / "l.db", _rows(3))
    table = Table(sources(url), "events")

    with pytest.raises(PlanError, match=r"field 'nope': the left table has no column 'nope' \(it has id, uid"):
        reconcile(table, Table(sources(_sqlite(tmp_path / "r.db", _rows(3))), "events"), ReconSpec(["id"], ["nope"]))
    with pytest.raises(PlanError, match="no checksum SQL for clickhouse"):
        reconcile(table, Table(sources("clickhouse://u@localhost/db"), "events"), ReconSpec(["id"]))
    with pytest.raises(PlanError, match="a second statement"):
        reconcile(Table(table.source, "events", where="1=1; DELETE FROM events"), table, ReconSpec(["id"]))
    with pytest.raises(PlanError, match="table 'nope': the right table does not exist, or this user cannot see it"):
        reconcile(table, Table(table.source, "nope"), ReconSpec(["id"]))
    with pytest.raises(PlanError, match="write table or schema.table"):
        reconcile(Table(table.source, "events; DROP TABLE events"), table, ReconSpec(["id"]))
    assert sqlite3.connect(tmp_path / "l.db").execute("SELECT COUNT(*) FROM events").fetchone() == (3,)


def _timed(n: int) -> list[Row]:
    """Events with text keys over four days, one every 96 s, a few without a time."""
    start = datetime(2026, 12, 1, tzinfo=UTC)
    return [(f"ev-{i:05d}", None if i % 500 == 3 else start + timedelta(seconds=96 * i), f"{i}.25") for i in range(n)]


def _time_differences(rows: list[Row]) -> list[Row]:
    """Row 10 moved two hours later (another segment), row 20 gone, row 503 (no time) gone, one row added."""
    moved = [(r[0], r[1] + timedelta(hours=2), r[2]) if r[0] == "ev-00010" else r for r in rows]
    kept = [r for r in moved if r[0] not in ("ev-00020", "ev-00503")]
    return [*kept, ("ev-99999", datetime(2026, 12, 2, 5, 0, 0, tzinfo=UTC), "1.00")]


@pytest.mark.usefixtures("small_segments")
def test_cut_by_a_time_field_a_moved_row_is_changed_not_missing_and_unexpected(
    postgres_url: str, mariadb_url: str, sources: Callable[[str], SqlSource]
) -> None:
    rows = _timed(4000)
    for url, data, ddl in (
        (postgres_url, rows, "event_id text PRIMARY KEY, created_at timestamptz, amount numeric(10,2)"),
        (
            mariadb_url,
            _time_differences(rows),
            "event_id varchar(20) PRIMARY KEY, created_at datetime(6), amount decimal(10,2)",
        ),
    ):
        engine = create_engine(url)
        with engine.begin() as c:
            c.execute(text(f"CREATE TABLE events ({ddl})"))
            naive = url.startswith("mysql")  # DATETIME holds UTC without a zone
            values = [(r[0], r[1].replace(tzinfo=None) if naive and r[1] else r[1], r[2]) for r in data]
            binds = [dict(zip("abc", v, strict=True)) for v in values]
            c.execute(text("INSERT INTO events VALUES (:a, :b, :c)"), binds)
        engine.dispose()

    result = reconcile(
        Table(sources(postgres_url), "events"),
        Table(sources(mariadb_url), "events"),
        ReconSpec(["event_id"], bucket_by="created_at", bucket_seconds=3600),
    )

    assert sorted(result.missing) == ["ev-00020", "ev-00503"]
    assert result.unexpected == ["ev-99999"]
    assert [(m["key"], m["field"]) for m in result.mismatches] == [("ev-00010", "created_at")]
    assert result.stats["levels"] >= 2
    assert result.stats["rows_read"]["left"] < 1000, result.stats


@pytest.mark.usefixtures("small_segments")
def test_cut_by_time_in_sqlite_and_duckdb(tmp_path: Path, sources: Callable[[str], SqlSource]) -> None:
    import duckdb

    rows = _timed(1500)
    right = _time_differences(rows)
    left_url = _sqlite(tmp_path / "l.db", [(r[0], r[1].isoformat() if r[1] else None, r[2]) for r in rows],
                       "event_id text PRIMARY KEY, created_at timestamp, amount real")  # fmt: skip
    with duckdb.connect(str(tmp_path / "r.duckdb")) as c:
        c.execute("CREATE TABLE events (event_id varchar PRIMARY KEY, created_at timestamptz, amount double)")
        c.executemany("INSERT INTO events VALUES (?, ?, ?)", [[r[0], r[1], float(r[2])] for r in right])

    result = reconcile(
        Table(sources(left_url), "events"),
        Table(sources(f"duckdb:///{tmp_path / 'r.duckdb'}"), "events"),
        ReconSpec(["event_id"], bucket_by="created_at", bucket_seconds=86400),
    )

    assert (sorted(result.missing), result.unexpected) == (["ev-00020", "ev-00503"], ["ev-99999"])
    assert [(m["key"], m["field"]) for m in result.mismatches] == [("ev-00010", "created_at")]


def test_the_sources_connections_are_given_back_in_their_own_time_zone(
    mariadb_url: str, sources: Callable[[str], SqlSource]
) -> None:
    """recon reads MariaDB's TIMESTAMPs in UTC; the stages that read through the same pool must not."""
    engine = create_engine(mariadb_url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE events (id int PRIMARY KEY, at timestamp NULL)"))
        c.execute(text("INSERT INTO events VALUES (1, '2026-12-04 10:00:00')"))
    engine.dispose()
    source = sources(mariadb_url)

    result = reconcile(Table(source, "events"), Table(source, "events"), ReconSpec(["id"]))

    assert result.verdict == "passed"
    with source.session() as connection:
        zones = connection.execute(text("SELECT @@session.time_zone, @@global.time_zone")).one()
    assert zones[0] == zones[1]
