"""Equal data hashes equal in PostgreSQL, MariaDB, SQLite and DuckDB, for every kind of value reconcile compares;
one changed value of any kind is found, in any pair of engines (issue 13)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from sqlalchemy import create_engine, text

from trackcheck.recon import ReconSpec, Table, reconcile
from trackcheck.sources.sql import SqlOptions, SqlSource

pytestmark = pytest.mark.integration

FIELDS = ["n_int", "n_dec", "n_float", "flag", "ts", "tstz", "day", "label"]
PLUS_TWO = timezone(timedelta(hours=2))
#: every row: id, then FIELDS; NULLs in every column, unicode, negative and pre-1970 values, digits that round
ROWS: list[tuple[Any, ...]] = [
    (1, 42, Decimal("25.50"), 0.1, True, datetime(2026, 12, 1, 10, 0, 0, 123456),
     datetime(2026, 12, 1, 12, 0, 0, 654321, tzinfo=PLUS_TWO), date(2026, 12, 1), "page_view"),
    (2, -7, Decimal("-0.01"), 1 / 3, False, datetime(1969, 12, 31, 23, 59, 59, 999999),
     datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), date(1969, 7, 20), "埋点 打点 ✓ 🎯"),
    (3, 0, Decimal("0.00"), -0.0000004, True, datetime(2026, 1, 2, 3, 4, 5),
     datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=UTC), date(2000, 2, 29), "Cafe\u0301 « quoted » 'x' \"y\""),
    (4, None, None, None, None, None, None, None, None),
    (5, 2_147_483_647, Decimal("9999999999.99"), 2.675, False, datetime(2038, 1, 19, 3, 14, 8, 1),
     datetime(2038, 1, 1, 1, tzinfo=PLUS_TWO), date(9999, 12, 31), ""),
    (6, 1, Decimal("1.00"), 1e10, True, datetime(2026, 12, 3, 0, 0), datetime(2026, 12, 3, tzinfo=UTC),
     date(2026, 12, 3), "a\tb\nc ~ =x"),
]  # fmt: skip


def _utc_naive(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def _postgres(url: str, rows: list[tuple[Any, ...]]) -> str:
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text(
            "CREATE TABLE events (id bigint PRIMARY KEY, n_int integer, n_dec numeric(12,2), n_float double precision, "
            "flag boolean, ts timestamp(6), tstz timestamptz, day date, label text)"
        ))  # fmt: skip
        if rows:
            c.execute(text("INSERT INTO events VALUES (:0, :1, :2, :3, :4, :5, :6, :7, :8)"), _binds(rows))
    engine.dispose()
    return url


def _mariadb(url: str, rows: list[tuple[Any, ...]]) -> str:
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("SET time_zone = '+00:00'"))
        c.execute(text(
            "CREATE TABLE events (id bigint PRIMARY KEY, n_int int, n_dec decimal(12,2), n_float double, "
            "flag boolean, ts datetime(6), tstz timestamp(6) NULL, day date, label varchar(100)) CHARACTER SET utf8mb4"
        ))  # fmt: skip
        # a TIMESTAMP holds UTC instants from 1970-01-01 00:00:01 to 2038-01-19: ROWS keeps to them
        stored = [(*row[:6], _utc_naive(row[6]), *row[7:]) for row in rows]
        c.execute(text("INSERT INTO events VALUES (:0, :1, :2, :3, :4, :5, :6, :7, :8)"), _binds(stored))
    engine.dispose()
    return url


def _sqlite(path: Path, rows: list[tuple[Any, ...]]) -> str:
    """SQLite as applications write it: numbers as numbers, instants as ISO text (with their offset)."""
    with sqlite3.connect(path) as c:
        c.execute(
            "CREATE TABLE events (id integer PRIMARY KEY, n_int integer, n_dec decimal(12,2), n_float real, "
            "flag boolean, ts timestamp, tstz timestamp, day date, label text)"
        )
        c.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                tuple(
                    v.isoformat() if isinstance(v, datetime | date) else float(v) if isinstance(v, Decimal) else v
                    for v in row
                )
                for row in rows
            ],
        )
    return f"sqlite:///{path}"


def _duckdb(path: Path, rows: list[tuple[Any, ...]]) -> str:
    with duckdb.connect(str(path)) as c:
        c.execute("SET TimeZone = 'UTC'")
        c.execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, n_int integer, n_dec decimal(12,2), n_float double, "
            "flag boolean, ts timestamp, tstz timestamptz, day date, label varchar)"
        )
        c.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [list(row) for row in rows])
    return f"duckdb:///{path}"


def _binds(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [{str(i): v for i, v in enumerate(row)} for row in rows]


Maker = Callable[[list[tuple[Any, ...]]], str]


@pytest.fixture
def engines(postgres_url: str, mariadb_admin: Any, tmp_path: Path) -> Iterator[dict[str, Maker]]:
    """Per engine, a function that stores rows in a table ``events`` of a database of its own and returns its URL."""
    made: list[str] = []

    def maria(rows: list[tuple[Any, ...]]) -> str:
        name = f"tc_recon_{len(made)}_{id(made)}"
        with mariadb_admin.connect() as c:
            c.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        made.append(name)
        return _mariadb(f"mysql+pymysql://root@127.0.0.1:3306/{name}", rows)

    def postgres(rows: list[tuple[Any, ...]]) -> str:
        engine = create_engine(postgres_url)
        with engine.begin() as c:
            c.execute(text("DROP TABLE IF EXISTS events"))
        engine.dispose()
        return _postgres(postgres_url, rows)

    counter = iter(range(1000))
    yield {
        "postgresql": postgres,
        "mariadb": maria,
        "sqlite": lambda rows: _sqlite(tmp_path / f"s{next(counter)}.db", rows),
        "duckdb": lambda rows: _duckdb(tmp_path / f"d{next(counter)}.duckdb", rows),
    }
    with mariadb_admin.connect() as c:
        for name in made:
            c.execute(text(f"DROP DATABASE IF EXISTS {name}"))


def _diff(left_url: str, right_url: str, **spec: Any) -> Any:
    left, right = SqlSource("left", SqlOptions(url=left_url)), SqlSource("right", SqlOptions(url=right_url))
    try:
        return reconcile(Table(left, "events"), Table(right, "events"), ReconSpec(key=["id"], **spec))
    finally:
        left.close()
        right.close()


PAIRS = [("postgresql", "mariadb"), ("postgresql", "sqlite"), ("postgresql", "duckdb"), ("mariadb", "sqlite"),
         ("mariadb", "duckdb"), ("duckdb", "sqlite")]  # fmt: skip


@pytest.mark.parametrize(("left", "right"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_equal_rows_hash_equal_in_both_engines(engines: dict[str, Maker], left: str, right: str) -> None:
    result = _diff(engines[left](ROWS), engines[right](ROWS))

    assert result.reason == f"the tables match: {len(ROWS)} rows, {len(FIELDS)} fields compared", result.mismatches
    assert (result.verdict, result.differences) == (
        "passed",
        {"missing": 0, "unexpected": 0, "changed": 0, "duplicates": 0},
    )
    forms = {f["name"]: f["form"] for f in result.fields}
    assert forms == {"n_int": "integer", "n_dec": "fixed", "n_float": "float", "flag": "integer", "ts": "time",
                     "tstz": "time", "day": "date", "label": "text"}  # fmt: skip


#: one changed value per field (row 1 unless said), and what the right table then holds
CHANGES: dict[str, tuple[int, Any]] = {
    "n_int": (1, 43),
    "n_dec": (1, Decimal("25.51")),
    "n_float": (2, 1 / 3 + 1e-6),
    "flag": (1, False),
    "ts": (1, datetime(2026, 12, 1, 10, 0, 0, 123457)),
    "tstz": (1, datetime(2026, 12, 1, 12, 0, 1, 654321, tzinfo=PLUS_TWO)),
    "day": (1, date(2026, 12, 2)),
    "label": (2, "埋点 打点 ✓ 🎯 "),
}


@pytest.mark.parametrize("changed", FIELDS)
@pytest.mark.parametrize("right", ["mariadb", "sqlite", "duckdb"])
def test_one_changed_value_of_any_kind_is_found_against_postgresql(
    engines: dict[str, Maker], right: str, changed: str
) -> None:
    row_id, value = CHANGES[changed]
    position = FIELDS.index(changed) + 1
    rows = [(*row[:position], value, *row[position + 1 :]) if row[0] == row_id else row for row in ROWS]

    result = _diff(engines["postgresql"](ROWS), engines[right](rows))

    assert result.differences == {"missing": 0, "unexpected": 0, "changed": 1, "duplicates": 0}
    assert [(m["key"], m["field"]) for m in result.mismatches] == [(row_id, changed)]


def test_a_null_differs_from_an_empty_text_and_from_zero(engines: dict[str, Maker]) -> None:
    base = [(1, 0, Decimal("0"), 0.0, False, None, None, None, "")]
    nulls = [(1, None, None, None, None, None, None, None, None)]

    result = _diff(engines["postgresql"](base), engines["mariadb"](nulls))

    assert sorted(m["field"] for m in result.mismatches) == ["flag", "label", "n_dec", "n_float", "n_int"]


def test_float_against_decimal_compares_at_the_decimal_scale(engines: dict[str, Maker]) -> None:
    # a float column in one engine, DECIMAL(12,2) in the other: both compared to 2 decimals
    left = engines["duckdb"]([(1, None, None, 25.5, None, None, None, None, None)])
    right_engine = create_engine(engines["postgresql"]([]))
    with right_engine.begin() as c:
        c.execute(text("ALTER TABLE events ALTER COLUMN n_float TYPE numeric(12,2)"))
        c.execute(text("INSERT INTO events (id, n_float) VALUES (1, 25.50)"))
    right_url = right_engine.url.render_as_string(hide_password=False)
    right_engine.dispose()

    result = _diff(left, right_url, fields=["n_float"])

    assert result.verdict == "passed", result.mismatches
    assert result.fields == [{"name": "n_float", "form": "float", "digits": 2}]
