"""Checks that fit real tracking data: ``compare.complete``, ``compare.duplicates``, ``severity: warn`` and the
``absent`` check, judged as a stage is (``evaluate_stage``), and the engine's decision for ``absent``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trackcheck.compare import CHECKS, Comparison, evaluate_stage
from trackcheck.compare.absent import AbsentCheck
from trackcheck.engine.outcome import decide
from trackcheck.plan.model import StageSpec


def stage(check: str = "compare", **spec: Any) -> StageSpec:
    if check in ("compare", "counts"):
        spec = {"with": "expect", **spec}
    return StageSpec.model_validate({"name": "s", "source": "x", check: spec})


def compare(found: list[dict[str, Any]], reference: list[dict[str, Any]], **spec: Any) -> Comparison:
    return evaluate_stage(stage(**spec), ["id"], found, reference)


HUNDRED = [{"id": f"e{i}", "event": "view"} for i in range(1, 101)]


# -- complete ----------------------------------------------------------------------------------------


def test_complete_passes_once_the_share_arrived_and_still_lists_what_is_missing() -> None:
    found = [dict(r) for r in HUNDRED if r["id"] != "e42"]

    result = compare(found, HUNDRED, complete="99%")

    assert result.verdict == "passed"
    assert result.missing == ["e42"]
    assert (result.expected, result.found) == (100, 99)
    assert result.reason == "99 of 100 expected events found (complete: 99%); missing: e42"


def test_complete_waits_below_the_share() -> None:
    found = [dict(r) for r in HUNDRED if r["id"] not in ("e1", "e2")]

    result = compare(found, HUNDRED, complete="99%")

    assert result.verdict == "waiting"
    assert result.missing == ["e1", "e2"]
    assert result.reason == "98 of 100 expected events found (complete: 99%); waiting for e1, e2"


def test_complete_rounds_the_share_up_and_a_share_as_a_number_works_too() -> None:
    reference = HUNDRED[:3]
    # two thirds of 3 is 2: enough for 66%, not for 67%
    assert compare(reference[:2], reference, complete="66%").verdict == "passed"
    assert compare(reference[:2], reference, complete=0.67).verdict == "waiting"


def test_complete_does_not_excuse_what_is_wrong() -> None:
    found = [dict(r) for r in HUNDRED if r["id"] != "e42"]
    found[0] = {"id": "e1", "event": "click"}

    result = compare(found, HUNDRED, complete="99%")

    assert result.verdict == "failed"
    assert result.mismatches == [{"key": "e1", "field": "event", "expected": "view", "actual": "click"}]
    assert result.missing == ["e42"]


def test_complete_times_out_as_incomplete_data_does() -> None:
    result = compare(HUNDRED[:50], HUNDRED, complete="99%")
    started = datetime(2026, 1, 1, tzinfo=UTC)
    decision = decide(
        comparison=result,
        error=None,
        now=started + timedelta(minutes=31),
        deadline=started + timedelta(minutes=30),
        timeout=timedelta(minutes=30),
        errors_in_row=0,
        retries=None,
    )
    assert decision.status == "failed"
    assert decision.reason is not None and decision.reason.startswith("timed out after 30m: 50 of 100 expected")


# -- duplicates --------------------------------------------------------------------------------------

EXPECT = [{"id": "e1", "event": "buy", "amount": 25.5}, {"id": "e2", "event": "view", "amount": 0}]
REDELIVERED = [dict(EXPECT[0]), dict(EXPECT[1]), {"id": "e1", "event": "buy", "amount": "25.50"}]
CHANGED = [dict(EXPECT[0]), dict(EXPECT[1]), {"id": "e1", "event": "buy", "amount": 52.5}]


def test_duplicates_fail_by_default_even_when_identical() -> None:
    result = compare(REDELIVERED, EXPECT)
    assert result.verdict == "failed"
    assert result.duplicates == ["e1"]
    assert result.reason == "duplicate key e1"


def test_allow_identical_accepts_an_unchanged_redelivery_and_keeps_it_in_the_evidence() -> None:
    result = compare(REDELIVERED, EXPECT, duplicates="allow-identical")

    assert result.verdict == "passed"
    assert result.duplicates == ["e1"]
    assert result.found == 3
    assert result.reason == "all 2 expected events found and matching; 1 duplicate key allowed (identical copies)"


def test_allow_identical_fails_a_duplicate_whose_compared_field_differs_naming_field_and_both_values() -> None:
    result = compare(CHANGED, EXPECT, duplicates="allow-identical")

    assert result.verdict == "failed"
    assert result.duplicates == ["e1"]
    assert result.reason is not None
    assert result.reason.startswith("1 duplicate key with different values: e1.amount 25.5 and 52.5")


def test_allow_identical_compares_only_the_declared_fields() -> None:
    """A warehouse row redelivered carries its own load time: not a compared field, not a difference."""
    reference = [{"id": "e1", "event": "buy"}]
    found = [{"id": "e1", "event": "buy", "loaded_at": "10:00"}, {"id": "e1", "event": "buy", "loaded_at": "10:05"}]

    assert compare(found, reference, duplicates="allow-identical", fields=["event"]).verdict == "passed"
    every_field = compare(found, reference, duplicates="allow-identical")
    assert every_field.verdict == "failed"
    assert "e1.loaded_at" in (every_field.reason or "")


def test_allow_identical_names_a_field_one_copy_lacks() -> None:
    found = [{"id": "e1", "event": "buy"}, {"id": "e1"}]
    result = compare(found, [{"id": "e1", "event": "buy"}], duplicates="allow-identical", fields=["event"])
    assert result.verdict == "failed"
    assert 'e1.event "buy" and no such field' in (result.reason or "")


def test_allow_accepts_differing_duplicates_and_still_lists_them() -> None:
    result = compare(CHANGED, EXPECT, duplicates="allow")

    # the last copy stands for the key: it is what is compared with the reference
    assert result.duplicates == ["e1"]
    assert result.mismatches == [{"key": "e1", "field": "amount", "expected": 25.5, "actual": 52.5}]
    assert result.verdict == "failed"
    identical_last = [CHANGED[2], dict(EXPECT[1]), dict(EXPECT[0])]
    allowed = compare(identical_last, EXPECT, duplicates="allow")
    assert allowed.verdict == "passed"
    assert allowed.duplicates == ["e1"]
    assert allowed.reason == "all 2 expected events found and matching; 1 duplicate key allowed"


def test_unexpected_duplicates_are_still_unexpected() -> None:
    found = [*REDELIVERED, {"id": "x9"}, {"id": "x9"}]
    result = compare(found, EXPECT, duplicates="allow-identical")
    assert result.verdict == "failed"
    assert result.unexpected == ["x9"]
    assert sorted(result.duplicates) == ["e1", "x9"]


# -- severity: warn ----------------------------------------------------------------------------------


def test_warn_on_compare_records_the_failure_and_passes_when_all_is_there() -> None:
    found = [dict(EXPECT[0], amount=52.5), dict(EXPECT[1])]

    failing = compare(found, EXPECT)
    result = compare(found, EXPECT, severity="warn")

    assert failing.verdict == "failed"
    assert result.verdict == "passed"
    assert result.warnings == ["1 field mismatch: e1.amount expected 25.5, got 52.5"]
    assert result.mismatches == failing.mismatches  # the evidence is kept
    assert result.reason == "1 warning (severity: warn): 1 field mismatch: e1.amount expected 25.5, got 52.5"


def test_warn_on_compare_still_waits_for_missing_events() -> None:
    reference = [*EXPECT, {"id": "e3", "event": "view", "amount": 0}]
    found = [dict(EXPECT[0], amount=52.5), dict(EXPECT[1])]

    result = compare(found, reference, severity="warn")

    assert result.verdict == "waiting"
    assert result.missing == ["e3"]
    assert result.warnings and "e1.amount expected 25.5, got 52.5" in result.warnings[0]


def test_warn_with_complete_passes_once_the_share_arrived() -> None:
    found = [dict(r) for r in HUNDRED if r["id"] != "e42"]
    found.append({"id": "x1", "event": "view"})

    result = compare(found, HUNDRED, complete="99%", severity="warn")

    assert result.verdict == "passed"
    assert (result.missing, result.unexpected) == (["e42"], ["x1"])
    assert result.warnings and result.warnings[0].startswith("1 unexpected event: x1")


def test_warn_on_duplicates() -> None:
    result = compare(CHANGED, EXPECT, duplicates="allow-identical", severity="warn", fields=["event"])
    assert result.verdict == "passed"  # the event field of both copies is equal
    result = compare(CHANGED, EXPECT, duplicates="fail", severity="warn", fields=["event"])
    assert (result.verdict, result.duplicates, result.warnings) == ("passed", ["e1"], ["duplicate key e1"])


def counts(found: list[dict[str, Any]], **spec: Any) -> Comparison:
    declared = {"by": "event", "value": "n", **spec}
    reference = [{"id": "e1", "event": "click"}, {"id": "e2", "event": "click"}, {"id": "e3", "event": "view"}]
    return evaluate_stage(stage("counts", **declared), ["id"], found, reference)


def test_warn_on_counts_passes_a_count_above_expected() -> None:
    found = [{"event": "click", "n": 3}, {"event": "view", "n": 1}]

    assert counts(found).verdict == "failed"
    result = counts(found, severity="warn")

    assert result.verdict == "passed"
    assert result.counts == [{"group": {"event": "click"}, "expected": 2, "actual": 3, "difference": 1}]
    assert result.warnings == ["1 group above the expected count: event=click 3 of 2"]


def test_warn_on_counts_waits_while_a_group_is_below() -> None:
    result = counts([{"event": "click", "n": 3}], severity="warn")
    assert result.verdict == "waiting"
    assert len(result.warnings) == 1 and "event=click 3 of 2" in result.warnings[0]


def test_a_check_that_did_not_fail_has_no_warning() -> None:
    assert compare([dict(r) for r in EXPECT], EXPECT, severity="warn").warnings == []
    assert compare(EXPECT[:1], EXPECT, severity="warn").verdict == "waiting"


def test_schema_violations_fail_a_stage_whose_main_check_only_warns(tmp_path: Any) -> None:
    schema = tmp_path / "s.json"
    schema.write_text('{"properties": {"amount": {"type": "number"}}}', encoding="utf-8")
    declared = StageSpec.model_validate(
        {
            "name": "s",
            "source": "x",
            "compare": {"with": "expect", "severity": "warn"},
            "schema": str(schema),
        }
    )
    found = [dict(EXPECT[0], amount="lots"), dict(EXPECT[1])]
    result = evaluate_stage(declared, ["id"], found, EXPECT)
    assert result.verdict == "failed"
    assert result.violations and result.warnings  # the mismatch warned, the schema failed


# -- absent ------------------------------------------------------------------------------------------


def absent(found: list[dict[str, Any]], **spec: Any) -> Comparison:
    return evaluate_stage(stage("absent", **{"for": "5m", **spec}), ["user_id"], found, [])


def test_absent_is_registered_under_its_plan_key() -> None:
    assert CHECKS["absent"] is AbsentCheck
    assert stage("absent", **{"for": "5m"}).reference is None


def test_absent_waits_while_nothing_arrived() -> None:
    result = absent([])
    assert (result.verdict, result.found, result.unexpected) == ("waiting", 0, [])
    assert result.reason == "nothing arrived that must not"


def test_absent_fails_at_the_first_record_naming_its_key() -> None:
    result = absent([{"user_id": "u1", "event": "view"}])
    assert result.verdict == "failed"
    assert result.unexpected == ["u1"]
    assert result.reason == "1 record arrived that must not: key u1"
    many = absent([{"user_id": f"u{i}"} for i in range(1, 6)])
    assert many.reason == "5 records arrived that must not: keys u1, u2, u3 and 2 more"


def test_absent_with_warn_records_the_arrival() -> None:
    result = absent([{"user_id": "u1"}], severity="warn")
    assert result.verdict != "failed"
    assert result.warnings == ["1 record arrived that must not: key u1"]
    assert result.unexpected == ["u1"]


START = datetime(2026, 1, 1, 12, tzinfo=UTC)


def decide_absent(comparison: Comparison, after: timedelta, timeout: timedelta = timedelta(minutes=30)) -> Any:
    return decide(
        comparison=comparison,
        error=None,
        now=START + after,
        deadline=START + timeout,
        timeout=timeout,
        errors_in_row=0,
        retries=None,
        started=START,
        absent_for=timedelta(minutes=5),
    )


def test_the_engine_passes_an_absent_stage_once_for_went_by_with_nothing() -> None:
    nothing = absent([])
    early = decide_absent(nothing, timedelta(minutes=4, seconds=59))
    assert (early.status, early.reason) == ("waiting", "nothing arrived that must not (299s of 5m)")
    done = decide_absent(nothing, timedelta(minutes=5))
    assert (done.status, done.reason) == ("passed", "after 5m: nothing arrived that must not")


def test_the_engine_fails_an_absent_stage_at_once_on_a_record() -> None:
    decision = decide_absent(absent([{"user_id": "u1"}]), timedelta(seconds=1))
    assert (decision.status, decision.reason) == ("failed", "1 record arrived that must not: key u1")


def test_a_warned_arrival_still_passes_only_after_for() -> None:
    warned = absent([{"user_id": "u1"}], severity="warn")
    assert decide_absent(warned, timedelta(minutes=1)).status == "waiting"
    done = decide_absent(warned, timedelta(minutes=5))
    assert done.status == "passed"
    assert done.reason == "after 5m: 1 warning (severity: warn): 1 record arrived that must not: key u1"


def test_a_timeout_shorter_than_for_fails_the_stage_saying_so() -> None:
    decision = decide_absent(absent([]), timedelta(minutes=2), timeout=timedelta(minutes=2))
    assert decision.status == "failed"
    assert decision.reason == (
        "timed out after 2m, before absent.for (5m) went by: nothing arrived that must not; "
        "give the stage a timeout of at least 5m"
    )


def test_a_timeout_equal_to_for_passes() -> None:
    assert decide_absent(absent([]), timedelta(minutes=5), timeout=timedelta(minutes=5)).status == "passed"


def test_absent_needs_its_for() -> None:
    with pytest.raises(ValueError, match="for"):
        stage("absent")
