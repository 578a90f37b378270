"""The columnar ``compare`` returns exactly what ``RecordsCheck`` returns for the same rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

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
