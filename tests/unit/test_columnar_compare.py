"""The columnar ``compare`` returns exactly what ``RecordsCheck`` returns for the same rows."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from trackcheck.compare import columnar
from trackcheck.compare.columnar import ColumnarRecordsCheck
from trackcheck.compare.records import RecordsCheck
from trackcheck.plan.model import CompareSpec

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def both(
    spec: dict[str, Any], found: pa.Table, reference: list[dict[str, Any]] | pa.Table, key: str = "id"
) -> dict[str, Any]:
    compare = CompareSpec.model_validate({"with": "expect", **spec})
    records = reference.to_pylist() if isinstance(reference, pa.Table) else reference
    rows = RecordsCheck(compare, [key]).evaluate(found.to_pylist(), records).to_dict()
    columns = ColumnarRecordsCheck(compare, [key]).evaluate_table(found, reference).to_dict()
    assert columns == rows
    return columns


@pytest.fixture
def columns_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The columnar path must not hand this case to the row path."""

    def refuse(*args: Any) -> None:
        raise AssertionError("handed to RecordsCheck.evaluate")

    monkeypatch.setattr(ColumnarRecordsCheck, "evaluate", refuse)


def spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    """What each call of ``compare.columnar``'s function ``name`` returns (to see that a fast path ran)."""
    results: list[Any] = []
    function = getattr(columnar, name)

    def recorded(*args: Any) -> Any:
        results.append(function(*args))
        return results[-1]

    monkeypatch.setattr(columnar, name, recorded)
    return results


def random_case(rng: random.Random) -> tuple[pa.Table, list[dict[str, Any]]]:
    n = rng.randint(0, 40)
    text_keys = rng.random() < 0.5
    ids = [f"e{i}" if text_keys else i for i in range(n + 10)]
    found_ids = rng.sample(ids, n)
    if n and rng.random() < 0.15:
        found_ids.append(rng.choice(found_ids))  # a duplicate: RecordsCheck decides
    amounts = [None if rng.random() < 0.1 else Decimal(rng.randint(-500, 500)) / 100 for _ in found_ids]
    times = [
        None if rng.random() < 0.1 else BASE + timedelta(seconds=rng.randint(-5, 5), microseconds=rng.choice([0, 500]))
        for _ in found_ids
    ]
    names = [rng.choice(["a", "b", None]) for _ in found_ids]
    found = pa.table(
        {
            "id": pa.array(found_ids),
            "amount": pa.array(amounts, type=pa.decimal128(12, 2)),
            "ts": pa.array(times, type=pa.timestamp("us", tz="UTC")),
            "name": pa.array(names, type=pa.string()),
            "count": pa.array([rng.randint(0, 3) for _ in found_ids], type=pa.int64()),
        }
    )
    duplicated_reference = rng.random() < 0.15
    reference = []
    for i, record in enumerate(found.to_pylist()):
        if rng.random() < 0.2:
            continue  # unexpected
        amount, ts = record["amount"], record["ts"]
        if amount is not None and rng.random() < 0.5:
            amount = rng.choice([float(amount), str(amount), float(amount) + rng.choice([0, 0.01, 1])])
        if ts is not None and rng.random() < 0.6:
            ts = rng.choice(
                [
                    ts.isoformat(),
                    ts.isoformat().replace("+00:00", "Z"),
                    ts.replace(tzinfo=None),
                    (ts + timedelta(seconds=1)).isoformat(),
                ]
            )
        wanted = {
            "id": record["id"],
            "amount": amount,
            "ts": ts,
            "name": rng.choice([record["name"], "c"]),
            "count": rng.choice([record["count"], float(record["count"]), True]),
        }
        if rng.random() < 0.1:
            del wanted["name"]
        reference.append(wanted)
        if duplicated_reference and i % 7 == 0:
            reference.append(dict(wanted))  # the same key twice in the reference
    reference.extend(
        {"id": k, "amount": 1.0, "ts": None, "name": "x", "count": 0} for k in ids if k not in set(found_ids)
    )
    rng.shuffle(reference)
    if rng.random() < 0.3:  # keys in increasing order on both sides (merged, not joined), when they are unique
        found = found.take(pc.sort_indices(found.column("id").cast(pa.string())))
        reference.sort(key=lambda r: str(r["id"]))
    return found, reference


@pytest.mark.parametrize("seed", range(120))
def test_random_tables_give_the_row_path_evidence(seed: int) -> None:
    rng = random.Random(seed)
    found, reference = random_case(rng)
    spec: dict[str, Any] = {
        "duplicates": rng.choice(["fail", "allow-identical", "allow"]),
        "allow_extra": rng.random() < 0.3,
        "on_mismatch": rng.choice(["fail", "wait"]),
    }
    if rng.random() < 0.5:
        spec["tolerance"] = {"amount": 0.5, "ts": "2s"}
    if rng.random() < 0.3:
        spec["complete"] = 0.9
    if rng.random() < 0.3:
        spec["fields"] = ["amount", "ts", "name", "absent_field"]
    both(spec, found, reference)
    if rng.random() < 0.3:  # the reference as a table: what to_pylist() of it gives
        typed = [
            {
                "id": r["id"],
                "name": r.get("name"),
                "amount": r["amount"] if type(r["amount"]) is float else None,
                "count": r["count"] if type(r["count"]) is int else None,
                "ts": r["ts"] if type(r["ts"]) is str else None,
            }
            for r in reference
        ]
        table = pa.Table.from_pylist(typed)
        both(spec, found, table)


def test_numbers_and_instants_in_json_types_match_the_table(columns_only: None) -> None:
    found = pa.table(
        {
            "id": ["e1", "e2", "e3"],
            "amount": pa.array([Decimal("25.50"), Decimal("1.00"), Decimal("3.10")], pa.decimal128(12, 2)),
            "ts": pa.array([BASE, BASE, BASE], pa.timestamp("us", tz="UTC")),
        }
    )
    reference = [
        {"id": "e1", "amount": 25.5, "ts": "2026-01-01T00:00:00+00:00"},
        {"id": "e2", "amount": "1", "ts": "2026-01-01T01:00:00+01:00"},
        {"id": "e3", "amount": 3.2, "ts": "2026-01-01T00:00:00Z"},
        {"id": "e4", "amount": 1, "ts": None},
    ]
    result = both({}, found, reference)
    assert result["mismatches"] == [{"key": "e3", "field": "amount", "expected": 3.2, "actual": 3.1}]
    assert result["missing"] == ["e4"]


def test_a_duplicate_key_is_judged_by_the_row_path() -> None:
    found = pa.table({"id": ["e1", "e1"], "v": [1, 2]})
    result = both({"duplicates": "allow-identical"}, found, [{"id": "e1", "v": 2}])
    assert result["verdict"] == "failed"
    assert result["duplicates"] == ["e1"]


def test_integer_keys_match_text_and_float_keys_of_the_reference(columns_only: None) -> None:
    found = pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    result = both({}, found, [{"id": "1", "v": "a"}, {"id": 2.0, "v": "x"}, {"id": 4, "v": "d"}])
    assert result["unexpected"] == [3]
    assert result["missing"] == [4]
    assert result["mismatches"] == [{"key": 2, "field": "v", "expected": "x", "actual": "b"}]


def test_tolerances_apply_to_numbers_and_instants(columns_only: None) -> None:
    found = pa.table(
        {
            "id": ["e1", "e2"],
            "amount": pa.array([Decimal("10.00"), Decimal("10.00")], pa.decimal128(12, 2)),
            "ts": pa.array([BASE, BASE], pa.timestamp("us", tz="UTC")),
        }
    )
    reference = [
        {"id": "e1", "amount": 10.4, "ts": (BASE + timedelta(seconds=2)).isoformat()},
        {"id": "e2", "amount": 11.0, "ts": (BASE + timedelta(seconds=9)).isoformat()},
    ]
    result = both({"tolerance": {"amount": 0.5, "ts": "5s"}}, found, reference)
    assert [(m["key"], m["field"]) for m in result["mismatches"]] == [("e2", "amount"), ("e2", "ts")]
    assert result["verdict"] == "failed"


def test_a_key_repeated_among_unpaired_keys_is_judged_by_the_row_path() -> None:
    # the join pairs e1 only: the repeats are among keys found only (e9) or expected only (e8)
    found = pa.table({"id": ["e1", "e9", "e9"], "v": [1, 2, 2]})
    result = both({"duplicates": "allow"}, found, [{"id": "e1", "v": 1}, {"id": "e8", "v": 1}])
    assert result["duplicates"] == ["e9"]
    reference = [{"id": "e1", "v": 1}, {"id": "e8", "v": 1}, {"id": "e8", "v": 2}]
    both({}, pa.table({"id": ["e1"], "v": [1]}), reference)
    both({}, pa.table({"id": ["e1"], "v": [1]}), pa.Table.from_pylist(reference))


def test_a_reference_in_the_found_order_is_read_in_place(columns_only: None) -> None:
    """The B2 shape: every found row paired, in order, with the first reference rows; then the reverse
    order, where the reference side is taken row by row; and some found rows unpaired."""
    ids = [f"e{i}" for i in range(10)]
    found = pa.table({"id": ids, "v": list(range(10)), "name": [f"n{i}" for i in range(10)]})
    in_order = [{"id": k, "v": i if i != 4 else 40, "name": f"n{i}"} for i, k in enumerate(ids)]
    in_order.append({"id": "e99", "v": 0, "name": "n"})
    for reference in (in_order, in_order[::-1], in_order[2:]):
        result = both({}, found, reference)
        assert [m["key"] for m in result["mismatches"]] == ["e4"]
        both({}, found, pa.Table.from_pylist(reference))
    both({}, found.slice(3), pa.Table.from_pylist(in_order))
    in_order[5]["name"] = "other"
    both({}, found, pa.Table.from_pylist(in_order).slice(1))  # the reference's columns at an offset


def test_decimals_and_floats_equal_only_as_the_same_number(columns_only: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decimal of at most 15 digits is compared with floats and ints as its correctly rounded double: equal
    doubles there are the same number, and a float a rounding apart (0.1 + 0.2 against 0.30) is not; wider
    decimals, integers beyond 2**53, negatives, nulls and sliced columns keep the row path's verdict."""
    rounded = spy(monkeypatch, "_rounded")
    wanted = [0.30000000000000004, 0.3, 25.5, -7.25, 1e-2, 2.0, 3.0, None, 10.0, 1234567890123.45]
    narrow = ["0.30", "0.30", "25.50", "-7.25", "0.01", "2.00", "3.00", None, None, "1234567890123.45"]
    for kind in (pa.decimal128(12, 2), pa.decimal128(15, 2), pa.decimal128(20, 2), pa.decimal128(5, 10)):
        values = [None if v is None else Decimal(v) for v in narrow]
        if kind.precision < 15:  # the 15-digit number does not fit
            values[-1] = None
        if kind.scale > kind.precision:  # tiny numbers, compared with the floats above: all differ
            values = [None if v is None else v.scaleb(-8) for v in values]
        found = pa.table({"id": [f"e{i}" for i in range(len(values))], "amount": pa.array(values, kind)})
        reference = [{"id": f"e{i}", "amount": w} for i, w in enumerate(wanted)]
        result = both({}, found, reference)
        if kind.scale == 2:
            assert [m["key"] for m in result["mismatches"]] == ["e0", "e8"] + (["e9"] if kind.precision < 15 else [])
        both({}, found.slice(2), reference)
    assert len(rounded) == 6 and all(r is not None for r in rounded)  # all but (20, 2), whole and sliced
    ints = pa.table({"id": ["e1", "e2", "e3"], "n": pa.array([2**53 + 1, 5, -3], pa.int64())})
    floats = [{"id": "e1", "n": float(2**53)}, {"id": "e2", "n": 5.0}, {"id": "e3", "n": -3}]
    assert [m["key"] for m in both({}, ints, floats)["mismatches"]] == ["e1"]
    unsigned = pa.table({"id": ["e1", "e2"], "n": pa.array([2**63 + 1, 5], pa.uint64())})
    assert both({}, unsigned, [{"id": "e1", "n": 2**63 + 1}, {"id": "e2", "n": -5}])["mismatches"] == [
        {"key": "e2", "field": "n", "expected": -5, "actual": 5}
    ]
    big = pa.table({"id": ["e1"], "n": pa.array([Decimal("9007199254740993")], pa.decimal128(16, 0))})
    assert both({}, big, [{"id": "e1", "n": 9007199254740992}])["mismatches"]


@pytest.mark.parametrize("seed", range(20))
def test_random_decimals_against_floats_near_them(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    scale = rng.randint(0, 6)
    kind = pa.decimal128(rng.randint(max(scale, 1), 15), scale)
    digits = kind.precision
    values = [Decimal(rng.randint(-(10**digits) + 1, 10**digits - 1)).scaleb(-scale) for _ in range(50)]
    found = pa.table({"id": [f"e{i}" for i in range(50)], "x": pa.array(values, kind)})
    reference = []
    for i, value in enumerate(values):
        near = float(value)
        near = rng.choice([near, math.nextafter(near, math.inf), math.nextafter(near, -math.inf), near * 10])
        reference.append({"id": f"e{i}", "x": near})
    rounded = spy(monkeypatch, "_rounded")
    both({}, found, reference)
    assert rounded


ISO_TEXTS = [
    "2026-01-01T00:00:00+00:00",
    "2026-01-01T00:00:00Z",
    "2026-01-01 00:00:00Z",
    "2026-01-01T01:00:00+01:00",
    "2025-12-31T23:00:00-01:00",
    "2026-01-01T00:00:00-00:00",
    "2026-01-01T01:00:00+0100",
    "2026-01-01T01:00:00+01",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "2026-01-01T00:00Z",
    "2026-01-01T00:00:00.5Z",
    "2026-01-01T00:00:00.000000+00:00",
    "2026-01-01T00:00:00.0000000+00:00",
    "2026-01-01T00:00:00.+00:00",
    "2026-01-01t00:00:00z",
    " 2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00Z ",
    "0000-01-01T00:00:00Z",
    "0999-01-01T00:00:00Z",
    "2026-01-01T00:00:00.123456+00:00",
    "2026-01-01T00:00:00.123+00:00",
    "x026-01-01T00:00:00Z",
    "2026-01-01T00:00:00+01:00Z",
    "",
    None,
]
#: in the shape the byte test passes, but out of range: Arrow refuses the whole column, Python the value
UNREADABLE = ["2026-02-30T00:00:00Z", "2026-01-01T00:00:00+24:00", "2026-01-01T24:00:00Z"]


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
@pytest.mark.parametrize("seed", range(8))
def test_iso_texts_against_instants_as_as_instant_reads_them(
    unit: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ISO shape the byte test lets Arrow parse reads as ``as_instant`` reads it; the shapes they
    read differently (no zone, ``+hh``, a date alone, year 0, out-of-range fields) go to Python; one text
    Arrow cannot parse in that shape (30 February) does not make the others wrong."""
    rng = random.Random(seed)
    texts = [rng.choice(ISO_TEXTS) for _ in range(30)]
    unreadable = seed % 4 == 3
    if unreadable:
        texts[rng.randrange(1, 30)] = rng.choice(UNREADABLE)  # a paired row in both calls below
    instants = [
        rng.choice(
            [
                BASE,
                BASE + timedelta(microseconds=500_000),
                BASE + timedelta(microseconds=123456),
                BASE + timedelta(microseconds=123000),
                None,
            ]
        )
        for _ in texts
    ]
    kind = pa.timestamp(unit, tz=rng.choice(["UTC", "Europe/Paris"]))
    cast = pa.array(instants, pa.timestamp("us", tz="UTC")).cast(kind, safe=False)
    found = pa.table({"id": [f"e{i}" for i in range(len(texts))], "ts": cast})
    reference = [{"id": f"e{i}", "ts": text} for i, text in enumerate(texts)]
    parsed = spy(monkeypatch, "_instants")
    both({"tolerance": {"ts": "1s"}} if rng.random() < 0.3 else {}, found, reference)
    table = pa.Table.from_pylist(reference, schema=pa.schema([("id", pa.string()), ("ts", pa.large_string())]))
    both({}, found.slice(1), table)
    both({}, found, table.slice(1))  # texts at an offset in their buffers
    assert parsed and all((result is None) == unreadable for result in parsed)


def test_iso_texts_arrow_reads_but_as_instant_does_not_are_mismatches(
    columns_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow reads ``+01`` and an hour alone as the found instant; ``as_instant`` reads neither, so the row
    path reports them: the byte test must keep them from Arrow's parse (the others are read there)."""
    texts = ["2026-01-01T01:00:00+01", "2026-01-01T00Z", "2026-01-01T00:00:00Z", "2026-01-01 01:00:00.000+01:00"]
    found = pa.table({"id": ["e0", "e1", "e2", "e3"], "ts": pa.array([BASE] * 4, pa.timestamp("us", tz="UTC"))})
    parsed = spy(monkeypatch, "_instants")
    result = both({}, found, [{"id": f"e{i}", "ts": text} for i, text in enumerate(texts)])
    assert [m["key"] for m in result["mismatches"]] == ["e0", "e1"]
    assert parsed[0].null_count == 2


def test_reference_keys_read_as_text_only_when_each_starts_with_a_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference keys that are all text starting with a letter are taken as they are (in columns); a key
    ``canonical`` reads as a number, or a record without the key, leaves them to ``keys_of`` and the row path."""
    found = pa.table({"id": ["e1", "é2", "x3"], "v": [1, 2, 3]})
    texts = spy(monkeypatch, "_letter_first_texts")
    result = both({}, found, [{"id": "é2", "v": 2}, {"id": "e1", "v": 0}, {"id": "z9", "v": 9}])
    assert result["missing"] == ["z9"] and result["unexpected"] == ["x3"] and texts[-1] is not None
    both({}, found, [{"id": "é2", "v": 2}, {"id": "e1", "v": 1}, {"id": "5", "v": 5}])
    assert texts[-1] is None
    both({}, found, [{"id": "é2", "v": 2}, {"v": 1}])
    assert texts[-1] is None


def test_reference_records_with_as_many_but_other_fields(columns_only: None) -> None:
    """Records with as many fields as the first paired one, but one of another name: the fields compared are
    then those of all the paired records, as the row path chooses them; the same fields in another order
    count as the same fields."""
    found = pa.table({"id": ["e1", "e2", "e3"], "a": [1, 2, 3], "b": ["x", "y", "z"]})
    other = [{"id": "e1", "a": 1, "b": "x"}, {"id": "e2", "a": 2, "c": "y"}, {"b": "z", "id": "e3", "a": 3}]
    assert both({}, found, other)["mismatches"] == [{"key": "e2", "field": "c", "expected": "y", "actual": None}]
    both({}, found, other[:1] + other[2:] + [{"id": "e4", "a": 4, "c": "q"}])
    both({"fields": ["a", "b"]}, found, other)


@pytest.mark.parametrize("seed", range(12))
def test_a_reference_in_the_found_types_is_compared_in_arrow(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # an earlier stage's snapshot kept in columns has the table's own types: decimals, dates and instants
    # against the same types are decided in Arrow, and say what the row path says of their Python values
    rng = random.Random(seed)
    n = 60
    amounts = [None if rng.random() < 0.1 else Decimal(rng.randint(-9999, 9999)) / 100 for _ in range(n)]
    days = [None if rng.random() < 0.1 else BASE.date() + timedelta(days=rng.randint(-3, 3)) for _ in range(n)]
    times = [None if rng.random() < 0.1 else BASE + timedelta(microseconds=rng.randint(-3, 3)) for _ in range(n)]

    def changed(values: list[Any], step: Any) -> list[Any]:
        return [step(v) if v is not None and rng.random() < 0.2 else v for v in values]

    types = {"amount": pa.decimal128(12, 2), "day": pa.date32(), "ts": pa.timestamp("us", tz="UTC")}
    found = pa.table(
        {
            "id": list(range(n)),
            **{f: pa.array(v, t) for (f, t), v in zip(types.items(), (amounts, days, times), strict=True)},
        }
    )
    kept = pa.table(
        {
            "id": list(range(n)),
            "amount": pa.array(changed(amounts, lambda v: v + Decimal("0.01")), types["amount"]),
            "day": pa.array(changed(days, lambda v: None), types["day"]),
            "ts": pa.array(changed(times, lambda v: v + timedelta(microseconds=1)), types["ts"]),
        }
    )
    uncertain = spy(monkeypatch, "_uncertain")

    result = both({}, found, kept)

    assert len(uncertain) == 3 and all(positions is not None for positions in uncertain)
    differing = {
        (r["id"], f) for r, k in zip(found.to_pylist(), kept.to_pylist(), strict=True) for f in types if r[f] != k[f]
    }
    assert {(m["key"], m["field"]) for m in result["mismatches"]} == differing
    assert differing  # the seeds change something


def test_decimals_of_other_scales_in_the_reference_are_compared_as_numbers(columns_only: None) -> None:
    found = pa.table(
        {"id": [1, 2, 3], "amount": pa.array([Decimal("1.50"), Decimal("2.00"), None], pa.decimal128(12, 2))}
    )
    kept = pa.table(
        {"id": [1, 2, 3], "amount": pa.array([Decimal("1.5000"), Decimal("2.0001"), None], pa.decimal128(14, 4))}
    )

    result = both({}, found, kept)

    assert result["mismatches"] == [{"key": 2, "field": "amount", "expected": 2.0001, "actual": 2}]


def test_reference_text_arrow_cannot_hold_is_compared_in_python() -> None:
    # a lone surrogate (JSON allows "\ud800" in expected events): UTF-8, so Arrow, cannot hold it
    found = pa.table({"id": [1, 2], "name": ["a", "b"]})

    result = both({}, found, [{"id": 1, "name": "a"}, {"id": 2, "name": "b\ud800"}])

    assert result["mismatches"] == [{"key": 2, "field": "name", "expected": "b\ud800", "actual": "b"}]
