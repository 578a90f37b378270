"""Rows read in columns, seen as records by the engine: split per run as ``split`` splits records, kept in
snapshots a slice at a time (and whole, as bytes), and their keys streamed into the first-seen map only until it
is full."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")

from trackcheck.compare.latency import key_texts, merge_first_seen, streamed_key_texts  # noqa: E402
from trackcheck.compare.tables import (  # noqa: E402
    TableRecords,
    records_table,
    reference_records,
    table_bytes,
    table_of,
)
from trackcheck.engine.groups import split, split_table  # noqa: E402

ROWS = [
    {"id": "e1", "test_id": "a", "n": 5, "tag": None},
    {"id": "e2", "test_id": "b", "n": 6, "tag": "x"},
    {"id": "e3", "test_id": "a", "n": 7, "tag": "y"},
    {"id": "e4", "test_id": "c", "n": 5, "tag": None},
]


@pytest.mark.parametrize(
    "wheres",
    [
        [{"test_id": "a"}, {"test_id": "b"}, {"test_id": "z"}],
        [{"test_id": ["a", "c"]}, {"test_id": "b"}],
        [{"n": "5"}, {"n": 6}],  # "5" is 5, as split reads it
        [{"test_id": "a", "n": 7}, {"test_id": "a", "n": 5}],
        [{"tag": None}, {"tag": "x"}],
        [{"missing": None}, {"missing": "a"}],  # a field the rows lack is null
        [{}, {}],
    ],
)
def test_rows_in_columns_are_split_per_run_as_records_are(wheres: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(ROWS)

    parts = split_table(TableRecords(table), wheres)

    assert [list(part) for part in parts] == split(ROWS, wheres)


def test_many_runs_sharing_a_read_each_get_their_rows_in_order() -> None:
    rows = [{"id": f"e{r}-{i}", "test_id": f"t{r % 50}", "n": i % 3} for r in range(200) for i in range(5)]
    wheres: list[dict[str, Any]] = [{"test_id": f"t{r}", "n": r % 3} for r in range(50)]
    wheres += [{"test_id": ["t1", "t2", "nowhere"], "n": [0, "1"]}, {"test_id": "nowhere", "n": 0}]

    parts = split_table(TableRecords(pa.Table.from_pylist(rows)), wheres)

    assert [list(part) for part in parts] == split(rows, wheres)


def test_no_rows_split_into_no_rows() -> None:
    table = pa.table({"test_id": pa.array([], pa.string())})

    assert [len(part) for part in split_table(TableRecords(table), [{"test_id": "a"}, {"test_id": ["a"]}])] == [0, 0]


def test_records_are_made_only_for_the_rows_read() -> None:
    rows = TableRecords(pa.Table.from_pylist(ROWS))

    assert len(rows) == 4
    assert rows[1] == ROWS[1] and rows[-1] == ROWS[3]
    assert rows[:2] == ROWS[:2] and rows[3:10] == ROWS[3:] and rows[::2] == ROWS[::2]
    assert list(rows) == ROWS
    with pytest.raises(IndexError):
        rows[4]


def test_streamed_keys_fill_the_first_seen_map_as_the_records_keys_do() -> None:
    table = pa.Table.from_pylist([{"id": i, "v": "x"} for i in range(10_000)])
    now = datetime(2026, 12, 4, tzinfo=UTC)
    previous = {key_texts([{"id": 9_999}], ["id"])[0]: "2026-12-03T00:00:00+00:00"}

    for limit in (1, 100, 20_000):
        streamed = merge_first_seen(previous, streamed_key_texts(TableRecords(table), ["id"]), now, limit)
        listed = merge_first_seen(previous, key_texts(table.to_pylist(), ["id"]), now, limit)
        assert streamed == listed


def test_a_full_first_seen_map_reads_no_more_keys() -> None:
    keys = iter(["a", "b", "c"])

    merged, gained = merge_first_seen({"x": "t"}, keys, datetime(2026, 12, 4, tzinfo=UTC), 2)

    assert (merged, gained) == ({"x": "t", "a": "2026-12-04T00:00:00+00:00"}, True)
    assert next(keys) == "c"  # "b" was read to find the map full; "c" never was


def test_a_table_kept_as_bytes_reads_back_the_same() -> None:
    table = pa.table(
        {
            "id": ["a", "b"],
            "amount": pa.array([Decimal("1.25"), None], pa.decimal128(12, 2)),
            "ts": pa.array([datetime(2026, 12, 4, 10, tzinfo=UTC), None], pa.timestamp("us", tz="UTC")),
        }
    )

    kept = table_bytes(table)

    assert isinstance(kept, bytes)
    assert table_of(kept).equals(table)


def test_a_reference_in_columns_becomes_the_records_a_snapshot_of_records_holds() -> None:
    table = pa.table(
        {
            "id": ["a"],
            "amount": pa.array([Decimal("1.25")], pa.decimal128(12, 2)),
            "day": pa.array([date(2026, 12, 4)], pa.date32()),
            "ts": pa.array([datetime(2026, 12, 4, 10, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
        }
    )

    assert reference_records(table) == [
        {"id": "a", "amount": 1.25, "day": "2026-12-04", "ts": "2026-12-04T10:00:00+00:00"}
    ]
    records = [{"id": "a"}]
    assert reference_records(records) is records


def test_records_arrow_holds_as_they_are_read_back_the_same() -> None:
    records = [
        {"id": "e1", "n": 1, "amount": 2.5, "ok": True, "note": None},
        {"id": "e2", "n": None, "amount": 3.0, "ok": False, "note": None},
    ]

    table = records_table(records)

    assert not isinstance(table, str)
    assert table.to_pylist() == records
    assert reference_records(table_of(table_bytes(table))) == records


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ([{"id": "a", "n": 1}, {"id": "b"}], "the records do not all have the same fields"),
        ([{"id": "a", "n": 1}, {"id": "b", "n": 1.5}], "field 'n' holds values of several types, or nested ones"),
        ([{"id": "a", "p": {"x": 1}}], "field 'p' holds values of several types, or nested ones"),
        ([{"id": "a", "p": [1, 2]}], "field 'p' holds values of several types, or nested ones"),
        ([{"id": "a", "n": 2**70}], "field 'n' holds an integer beyond 64 bits"),
        ([{"id": "a\ud800"}], "field 'id' holds a value Arrow cannot hold"),
        ([], "no records"),
    ],
)
def test_records_arrow_would_change_are_refused_with_the_reason(records: list[dict[str, Any]], problem: str) -> None:
    assert records_table(records) == problem
