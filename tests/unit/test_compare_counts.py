"""The ``counts`` check: aggregates per group against the reference's records."""

from __future__ import annotations

from typing import Any

from trackcheck.compare import Comparison, evaluate_stage
from trackcheck.plan.model import StageSpec

# 3 clicks, 2 views, 1 purchase
REFERENCE = [{"id": f"e{i}", "event": e} for i, e in enumerate(["click"] * 3 + ["view"] * 2 + ["purchase"])]


def counts(found: list[dict[str, Any]], reference: list[dict[str, Any]] = REFERENCE, **spec: Any) -> Comparison:
    declared = {"with": "expect", "by": "event", "value": "n", **spec}
    stage = StageSpec.model_validate({"name": "s", "source": "x", "counts": declared})
    return evaluate_stage(stage, ["id"], found, reference)


def rows(**per_event: Any) -> list[dict[str, Any]]:
    return [{"event": event, "n": n} for event, n in per_event.items()]


def test_exact_counts_pass() -> None:
    result = counts(rows(click=3, view=2, purchase=1))
    assert result.verdict == "passed"
    assert (result.expected, result.found) == (6, 6)
    assert result.counts == []
    assert result.reason == "counts match for 3 groups"


def test_number_like_text_counts_are_read_as_numbers() -> None:
    assert counts(rows(click="3", view="2.0", purchase=1)).verdict == "passed"


def test_a_group_below_its_count_means_waiting() -> None:
    result = counts(rows(click=2, view=2))
    assert result.verdict == "waiting"
    assert result.counts == [
        {"group": {"event": "click"}, "expected": 3, "actual": 2, "difference": -1},
        {"group": {"event": "purchase"}, "expected": 1, "actual": 0, "difference": -1},
    ]
    assert result.reason == ("2 groups below the expected count; waiting for event=click 2 of 3, event=purchase 0 of 1")


def test_a_group_above_its_count_fails() -> None:
    result = counts(rows(click=5, view=2, purchase=1))
    assert result.verdict == "failed"
    assert result.counts == [{"group": {"event": "click"}, "expected": 3, "actual": 5, "difference": 2}]
    assert result.reason == "1 group above the expected count: event=click 5 of 3"


def test_absolute_tolerance() -> None:
    assert counts(rows(click=4, view=1, purchase=1), tolerance=1).verdict == "passed"
    assert counts(rows(click=5, view=2, purchase=1), tolerance=1).verdict == "failed"


def test_percent_tolerance_is_a_share_of_the_expected_count() -> None:
    reference = [{"id": i, "event": "click"} for i in range(100)]
    result = counts(rows(click=96), reference, tolerance="5%")
    assert result.verdict == "passed"
    assert result.reason == "counts within tolerance for 1 group"
    assert counts(rows(click=94), reference, tolerance="5%").verdict == "waiting"
    assert counts(rows(click=106), reference, tolerance="5%").verdict == "failed"


def test_a_group_the_reference_does_not_have_fails_unless_allowed() -> None:
    found = rows(click=3, view=2, purchase=1, signup=4)
    result = counts(found)
    assert result.verdict == "failed"
    assert result.counts == [{"group": {"event": "signup"}, "expected": 0, "actual": 4, "difference": 4}]
    assert result.reason == "1 unexpected group: event=signup (4)"

    allowed = counts(found, allow_extra=True)
    assert allowed.verdict == "passed"
    assert allowed.counts[0]["expected"] == 0
    assert allowed.reason == "counts match for 3 groups; 1 extra group allowed"


def test_a_count_that_is_not_a_number_fails_clearly() -> None:
    result = counts(rows(click="lots", view=2, purchase=1))
    assert result.verdict == "failed"
    assert result.counts == [{"group": {"event": "click"}, "expected": 3, "actual": "lots", "difference": None}]
    assert result.reason == "1 count in 'n' not a number: event=click has \"lots\""


def test_composite_groups() -> None:
    reference = [{"event": "click", "day": "mon"}, {"event": "click", "day": "tue"}, {"event": "click", "day": "tue"}]
    found = [{"event": "click", "day": "mon", "n": 1}, {"event": "click", "day": "tue", "n": 1}]
    result = counts(found, reference, by=["event", "day"])
    assert result.verdict == "waiting"
    assert result.counts == [{"group": {"event": "click", "day": "tue"}, "expected": 2, "actual": 1, "difference": -1}]
    assert "(event=click, day=tue) 1 of 2" in (result.reason or "")
