"""The ``compare`` check: records matched by key, field by field, and the verdict a user sees."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from trackcheck.compare import Comparison, evaluate_stage
from trackcheck.plan.model import StageSpec


def stage(**compare: Any) -> StageSpec:
    return StageSpec.model_validate({"name": "s", "source": "x", "compare": {"with": "expect", **compare}})


def check(found: list[Any], reference: list[Any], key: list[str] | None = None, **compare: Any) -> Comparison:
    return evaluate_stage(stage(**compare), key or ["id"], found, reference)


EXPECT = [
    {"id": "e1", "event": "purchase", "amount": 10},
    {"id": "e2", "event": "purchase", "amount": 25.5},
    {"id": "e3", "event": "refund", "amount": 5},
]


def test_everything_found_and_equal_passes() -> None:
    result = check([dict(r) for r in EXPECT], EXPECT)
    assert result.verdict == "passed"
    assert (result.expected, result.found) == (3, 3)
    assert result.reason == "all 3 expected events found and matching"


def test_missing_events_mean_waiting_with_the_keys_named() -> None:
    result = check(EXPECT[:2], EXPECT)
    assert result.verdict == "waiting"
    assert result.missing == ["e3"]
    assert result.reason == "2 of 3 expected events found; waiting for e3"


def test_many_missing_keys_are_summarised() -> None:
    reference = [{"id": f"e{i}"} for i in range(1, 7)]
    result = check([], reference)
    assert len(result.missing) == 6
    assert result.reason == "0 of 6 expected events found; waiting for e1, e2, e3 and 3 more"


def test_numbers_compare_as_numbers() -> None:
    found = [{"id": "e1", "amount": "25.50"}, {"id": "e2", "amount": Decimal("25.5")}, {"id": "e3", "amount": 25.5}]
    reference = [{"id": k, "amount": 25.5} for k in ("e1", "e2", "e3")]
    assert check(found, reference).verdict == "passed"


def test_a_different_number_is_a_mismatch_with_both_values() -> None:
    found = [dict(EXPECT[0]), {"id": "e2", "event": "purchase", "amount": 26}, dict(EXPECT[2])]
    result = check(found, EXPECT)
    assert result.verdict == "failed"
    assert result.mismatches == [{"key": "e2", "field": "amount", "expected": 25.5, "actual": 26}]
    assert result.reason == "1 field mismatch: e2.amount expected 25.5, got 26"


def test_text_values_are_quoted_in_the_reason() -> None:
    result = check([{"id": "e1", "currency": "USD"}], [{"id": "e1", "currency": "EUR"}])
    assert result.reason == '1 field mismatch: e1.currency expected "EUR", got "USD"'


def test_numeric_tolerance_absorbs_small_differences_only() -> None:
    reference = [{"id": "e1", "amount": 25.5}]
    assert (
        check([{"id": "e1", "amount": 25.505}], reference, fields=["amount"], tolerance={"amount": 0.01}).verdict
        == "passed"
    )
    assert (
        check([{"id": "e1", "amount": 25.52}], reference, fields=["amount"], tolerance={"amount": 0.01}).verdict
        == "failed"
    )
    assert check([{"id": "e1", "amount": 25.505}], reference, fields=["amount"]).verdict == "failed"


def test_timestamps_compare_as_instants() -> None:
    reference = [{"id": "e1", "ts": "2026-11-24T10:00:00Z"}]
    assert check([{"id": "e1", "ts": "2026-11-24 11:00:00+01:00"}], reference).verdict == "passed"
    assert check([{"id": "e1", "ts": datetime(2026, 11, 24, 10, tzinfo=UTC)}], reference).verdict == "passed"
    result = check([{"id": "e1", "ts": "2026-11-24T10:00:05Z"}], reference)
    assert result.verdict == "failed"
    assert result.mismatches[0]["actual"] == "2026-11-24T10:00:05Z"


def test_a_date_column_equals_its_snapshot_as_iso_text() -> None:
    # a driver's date, stored in an earlier stage's snapshot as "2026-12-04", read again by a later stage
    assert check([{"id": "e1", "day": date(2026, 12, 4)}], [{"id": "e1", "day": "2026-12-04"}]).verdict == "passed"
    result = check([{"id": "e1", "day": date(2026, 12, 3)}], [{"id": "e1", "day": "2026-12-04"}])
    assert result.reason == '1 field mismatch: e1.day expected "2026-12-04", got "2026-12-03"'
    # and a date key matches its text
    assert check([{"id": date(2026, 12, 4)}], [{"id": "2026-12-04"}]).verdict == "passed"


def test_duration_tolerance_on_timestamps() -> None:
    reference = [{"id": "e1", "ts": "2026-11-24T10:00:00Z"}]
    late = [{"id": "e1", "ts": "2026-11-24T10:00:04Z"}]
    assert check(late, reference, fields=["ts"], tolerance={"ts": "5s"}).verdict == "passed"
    assert check(late, reference, fields=["ts"], tolerance={"ts": "3s"}).verdict == "failed"


def test_booleans_match_the_ones_and_zeros_of_mysql() -> None:
    assert check([{"id": "e1", "consent": 1}], [{"id": "e1", "consent": True}]).verdict == "passed"
    assert check([{"id": "e1", "consent": "true"}], [{"id": "e1", "consent": True}]).verdict == "failed"


def test_composite_keys_match_on_every_key_field_and_show_as_maps() -> None:
    reference = [{"user": 1, "seq": 1, "event": "a"}, {"user": 1, "seq": 2, "event": "b"}]
    found = [{"user": "1", "seq": 2, "event": "x"}]
    result = check(found, reference, key=["user", "seq"])
    assert result.verdict == "failed"
    assert result.missing == [{"user": 1, "seq": 1}]
    assert result.mismatches == [{"key": {"user": "1", "seq": 2}, "field": "event", "expected": "b", "actual": "x"}]
    assert "(user=1, seq=2).event expected" in (result.reason or "")


def test_keys_match_across_representations() -> None:
    reference = [{"id": 1, "event": "a"}, {"id": 2, "event": "b"}]
    found = [{"id": "2", "event": "b"}, {"id": Decimal("1.0"), "event": "a"}]
    assert check(found, reference).verdict == "passed"


def test_unexpected_events_fail_unless_extras_are_allowed() -> None:
    found = [*EXPECT, {"id": "e9", "event": "purchase", "amount": 1}]
    result = check(found, EXPECT)
    assert result.verdict == "failed"
    assert result.unexpected == ["e9"]
    assert result.reason == "1 unexpected event: e9"

    allowed = check(found, EXPECT, allow_extra=True)
    assert allowed.verdict == "passed"
    assert allowed.unexpected == ["e9"]
    assert allowed.reason == "all 3 expected events found and matching; 1 extra event allowed"


def test_duplicates_always_fail_even_with_extras_allowed() -> None:
    found = [*EXPECT, dict(EXPECT[0])]
    result = check(found, EXPECT, allow_extra=True)
    assert result.verdict == "failed"
    assert result.duplicates == ["e1"]
    assert result.found == 4
    assert result.reason == "duplicate key e1"


def test_duplicates_in_the_reference_count_once() -> None:
    result = check([dict(EXPECT[0])], [EXPECT[0], EXPECT[0]])
    assert (result.verdict, result.expected, result.duplicates) == ("passed", 1, [])


def test_on_mismatch_wait_keeps_waiting_instead_of_failing() -> None:
    found = [{"id": "e1", "status": "pending"}]
    result = check(found, [{"id": "e1", "status": "done"}], on_mismatch="wait")
    assert result.verdict == "waiting"
    assert result.mismatches[0]["field"] == "status"


def test_failure_reason_also_names_what_is_missing() -> None:
    found = [{"id": "e1", "amount": 11}]
    result = check(found, [{"id": "e1", "amount": 10}, {"id": "e2", "amount": 1}])
    assert result.verdict == "failed"
    assert result.reason == "1 field mismatch: e1.amount expected 10, got 11; 1 of 2 expected events found; missing e2"


def test_only_the_listed_fields_are_compared() -> None:
    found = [{"id": "e1", "event": "purchase", "page": "/other"}]
    reference = [{"id": "e1", "event": "purchase", "page": "/home"}]
    assert check(found, reference, fields=["event"]).verdict == "passed"
    assert check(found, reference).verdict == "failed"


def test_without_a_field_list_extra_found_fields_are_ignored() -> None:
    found = [{"id": "e1", "event": "purchase", "loaded_at": "2026-11-24T10:00:00Z"}]
    assert check(found, [{"id": "e1", "event": "purchase"}]).verdict == "passed"


def test_reference_records_of_different_shapes_compare_their_own_fields() -> None:
    reference = [{"id": "e1", "event": "a"}, {"id": "e2", "amount": 3}]
    found = [{"id": "e1", "event": "a"}, {"id": "e2", "amount": 4, "event": "z"}]
    result = check(found, reference)
    assert result.mismatches == [{"key": "e2", "field": "amount", "expected": 3, "actual": 4}]


def test_a_field_absent_from_the_found_record_is_a_mismatch() -> None:
    result = check([{"id": "e1"}], [{"id": "e1", "amount": 10}])
    assert result.verdict == "failed"
    assert result.mismatches == [{"key": "e1", "field": "amount", "expected": 10, "actual": None}]
    assert result.reason == "1 field mismatch: e1.amount expected 10, got no such field"


def test_a_null_value_is_not_an_absent_field() -> None:
    assert check([{"id": "e1", "coupon": None}], [{"id": "e1", "coupon": None}]).verdict == "passed"
    assert check([{"id": "e1"}], [{"id": "e1", "coupon": None}], fields=["coupon"]).verdict == "failed"


def test_evidence_is_json_ready() -> None:
    found = [{"id": "e1", "amount": Decimal("10.5"), "ts": datetime(2026, 11, 24, 10, tzinfo=UTC)}]
    result = check(found, [{"id": "e1", "amount": 10, "ts": "2026-11-24T09:00:00Z"}])
    assert result.mismatches == [
        {"key": "e1", "field": "amount", "expected": 10, "actual": 10.5},
        {"key": "e1", "field": "ts", "expected": "2026-11-24T09:00:00Z", "actual": "2026-11-24T10:00:00+00:00"},
    ]


def test_typed_records_match_their_json_snapshot() -> None:
    """A later stage compares Decimal/datetime rows with the JSON snapshot of an earlier one, in bulk."""
    found: list[dict[str, Any]] = [
        {"id": f"e{i}", "amount": Decimal(i) / 100, "ts": datetime(2026, 11, 24, 10, i % 60, tzinfo=UTC)}
        for i in range(200)
    ]
    snapshot = [{"id": r["id"], "amount": float(r["amount"]), "ts": r["ts"].isoformat()} for r in found]
    assert check(found, snapshot).verdict == "passed"
    snapshot[150]["amount"] = 9.99
    result = check(found, snapshot)
    assert result.mismatches == [{"key": "e150", "field": "amount", "expected": 9.99, "actual": 1.5}]


def test_mismatches_are_listed_in_record_then_field_order() -> None:
    reference = [{"id": f"e{i}", "a": 1, "b": 1} for i in range(100)]
    found = [{"id": f"e{i}", "a": 2, "b": 2} for i in range(100)]
    result = check(found, reference)
    assert [(m["key"], m["field"]) for m in result.mismatches[:3]] == [("e0", "a"), ("e0", "b"), ("e1", "a")]
    assert result.reason is not None and result.reason.endswith("and 197 more")


def test_records_found_in_another_order_still_pair_by_key() -> None:
    reference = [{"id": f"e{i}", "n": i} for i in range(50)]
    found = list(reversed(reference))
    assert check(found, reference).verdict == "passed"


def test_nothing_expected_and_nothing_found_passes() -> None:
    result = check([], [])
    assert (result.verdict, result.reason) == ("passed", "no events expected")


@pytest.mark.parametrize("found", [[], [{"id": "e1"}]])
def test_comparison_serialises(found: list[dict[str, Any]]) -> None:
    data = check(found, [{"id": "e1"}]).to_dict()
    assert set(data) >= {"verdict", "expected", "found", "missing", "mismatches", "reason"}


def test_text_that_reads_as_a_number_beyond_floats_is_compared_as_text_without_overflow() -> None:
    from trackcheck.compare.values import canonical, equal
    from trackcheck.sources.base import filter_records

    assert canonical("1e999999999") == "1e999999999"  # a random hex id can look like this
    assert canonical("12345e78901") == "12345e78901"  # never expanded to its 78,905 digits
    assert equal("1e999999999", "1e999999999") and not equal("1e999999999", "1E999999999")
    assert canonical("1e300") == canonical(1e300) and canonical("25.50") == canonical(25.5)
    records = [{"test_id": "1e999999999"}, {"test_id": "t1"}]
    assert filter_records(records, {"test_id": ["t1"]}) == [{"test_id": "t1"}]
