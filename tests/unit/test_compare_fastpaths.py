"""The bulk shortcuts of the checks give exactly the answers of ``compare.values``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from trackcheck.compare.checks import differing, fast_canonical, keys_of, same
from trackcheck.compare.values import canonical, equal, key_of

VALUES: list[Any] = [
    "e1", "Éclair", "", " 12", "12", "-3.50", ".5", "1e3", "2026-11-24T10:00:00Z", "2026-11-24 11:00:00+01:00",
    "2026-11-24", "abc:def", 0, 1, -7, 10**30, 2.5, 26.0, -0.0, Decimal("25.50"), Decimal("1E+2"), True, False,
    None, datetime(2026, 11, 24, 10, tzinfo=UTC), datetime(2026, 11, 24, 10), date(2026, 11, 24),
    datetime(2026, 11, 24, 11, tzinfo=timezone(timedelta(hours=1))), [1, "a"], {"a": 1},
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_fast_canonical_is_canonical(value: Any) -> None:
    assert fast_canonical(value) == canonical(value)


@pytest.mark.parametrize("fields", [["a"], ["a", "b"]])
def test_keys_of_is_key_of_for_every_column_kind(fields: list[str]) -> None:
    columns: list[list[Any]] = [["x1", "y2"], [1, 2], [1, "2"], ["1", ""], [10**30, 3], [None, "a"]]
    for column in columns:
        records = [{"a": value, "b": value} for value in column] + [{"b": 1}]
        assert keys_of(records, fields) == [key_of(r, fields) for r in records]


@pytest.mark.parametrize("left", VALUES, ids=repr)
def test_same_is_equal_or_python_equality(left: Any) -> None:
    for right in VALUES:
        assert same(left, right, None) == (left == right or equal(left, right)), (left, right)


def test_column_conversions_never_hide_a_difference() -> None:
    wants: list[Any] = [0.1, 2.5, 3.0, 1e-7, 7.25]
    gots: list[Any] = [Decimal("0.1"), Decimal("2.50"), Decimal("3"), Decimal("1E-7"), Decimal("7.3")]
    assert differing(wants, gots) == [4]

    instants = [datetime(2026, 11, 24, 10, tzinfo=UTC), datetime(2026, 11, 24, 10, tzinfo=UTC)]
    assert differing(["2026-11-24T10:00:00+00:00", "2026-11-24T10:00:01+00:00"], instants) == [1]
    # a date alone is not an instant for compare.values: no shortcut may call it equal to midnight
    assert differing(["2026-11-24", "2026-11-24"], [datetime(2026, 11, 24)] * 2) == [0, 1]
