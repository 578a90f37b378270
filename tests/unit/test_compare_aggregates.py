"""The ``aggregates`` check: count, sum, avg, min and max per group against the reference's, within tolerance;
and ``counts`` against an earlier stage that returned counts itself."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy.dialects import mysql, postgresql

from trackcheck.compare import CHECKS, Comparison, evaluate_stage
from trackcheck.compare.aggregates import AggregatesCheck
from trackcheck.errors import PlanError, SourceQueryError
from trackcheck.plan.model import StageSpec
from trackcheck.sources.base import FetchRequest
from trackcheck.sources.sql import SqlOptions, SqlSource, build_statement

#: what a test sent: 2 purchases (1250.5 in all), 1 refund, 2 page views without an amount
SENT: list[dict[str, Any]] = [
    {"id": "e1", "event": "purchase", "amount": 1000},
    {"id": "e2", "event": "purchase", "amount": "250.50"},
    {"id": "e3", "event": "refund", "amount": -20},
    {"id": "e4", "event": "page_view", "amount": None},
    {"id": "e5", "event": "page_view"},
]


def aggregates(found: list[dict[str, Any]], reference: list[dict[str, Any]] = SENT, **spec: Any) -> Comparison:
    declared = {"with": "expect", "by": "event", **spec}
    stage = StageSpec.model_validate({"name": "s", "source": "x", "aggregates": declared})
    return evaluate_stage(stage, ["id"], found, reference)


def measured(result: Comparison) -> dict[tuple[str, str], tuple[Any, Any]]:
    """The evidence as {(group value, measure): (expected, actual)}."""
    return {(str(e["group"].get("event")), e["measure"]): (e["expected"], e["actual"]) for e in result.counts}


def test_registered_under_its_plan_key() -> None:
    assert CHECKS["aggregates"] is AggregatesCheck


def test_every_measure_per_group_matches_and_text_numbers_are_numbers() -> None:
    found: list[dict[str, Any]] = [
        {"event": "purchase", "amount": "1000.00"},
        {"event": "purchase", "amount": 250.5},
        {"event": "refund", "amount": "-20"},
        {"event": "page_view", "amount": None},
        {"event": "page_view", "amount": None},
    ]

    result = aggregates(found, count=True, sum="amount", avg="amount", min="amount", max="amount")

    assert result.verdict == "passed", result.reason
    assert (result.expected, result.found) == (5, 5)
    assert result.counts == []
    assert result.reason == "aggregates match for 3 groups"


def test_a_sum_beyond_tolerance_fails_naming_measure_group_values_and_tolerance() -> None:
    found = [{"event": "purchase", "amount": 1000}, {"event": "purchase", "amount": 260}, SENT[2]]

    result = aggregates(found, reference=SENT[:3], sum="amount", tolerance={"amount": "0.5%"})

    assert result.verdict == "failed"
    assert result.counts == [
        {
            "group": {"event": "purchase"},
            "measure": "sum(amount)",
            "expected": 1250.5,
            "actual": 1260,
            "difference": 9.5,
        }
    ]
    assert result.reason == "sum(amount) of purchase: expected 1250.5, got 1260 (tolerance 0.5%)"


def test_absolute_and_percent_tolerances() -> None:
    reference = SENT[:2]  # purchase: sum 1250.5
    over = [{"event": "purchase", "amount": 1000}, {"event": "purchase", "amount": 260}]  # 1260: +9.5

    assert aggregates(over, reference, sum="amount", tolerance={"amount": 10}).verdict == "passed"
    assert aggregates(over, reference, sum="amount", tolerance={"amount": 9}).verdict == "failed"
    assert aggregates(over, reference, sum="amount", tolerance={"amount": "1%"}).verdict == "passed"  # 12.505
    within = aggregates(over, reference, sum="amount", tolerance={"amount": "0.7%"})  # 8.75
    assert within.verdict == "failed"
    assert aggregates(over, reference, sum="amount", tolerance={"amount": 9.5}).reason == (
        "aggregates within tolerance for 1 group"
    )


def test_a_tolerance_named_by_measure_overrides_the_fields_and_count_has_its_own() -> None:
    reference = [{"event": "click", "amount": 10}] * 4  # count 4, sum 40, avg 10
    found = [{"event": "click", "amount": 12}] * 5  # count 5, sum 60, avg 12
    spec: dict[str, Any] = {"count": True, "sum": "amount", "avg": "amount"}

    loose = aggregates(found, reference, **spec, tolerance={"count": 1, "amount": 2, "sum(amount)": "50%"})
    strict = aggregates(found, reference, **spec, tolerance={"count": 1, "amount": 2, "sum(amount)": 19})

    assert loose.verdict == "passed", loose.reason
    assert strict.verdict == "failed"
    assert measured(strict) == {("click", "sum(amount)"): (40, 60)}


def test_measures_below_that_rows_can_still_raise_wait_and_above_fail() -> None:
    found = [{"event": "purchase", "amount": 1000}]

    result = aggregates(found, SENT[:2], count=True, sum="amount", max="amount")

    assert result.verdict == "waiting"
    assert measured(result) == {("purchase", "count"): (2, 1), ("purchase", "sum(amount)"): (1250.5, 1000)}
    assert result.reason == (
        "waiting for count of purchase: expected 2, got 1; sum(amount) of purchase: expected 1250.5, got 1000"
    )
    duplicated = aggregates([*SENT[:2], SENT[0]], SENT[:2], count=True, sum="amount", max="amount")
    assert duplicated.verdict == "failed"
    assert measured(duplicated) == {("purchase", "count"): (2, 3), ("purchase", "sum(amount)"): (1250.5, 2250.5)}


def test_a_minimum_waits_while_above_and_fails_below_a_maximum_the_other_way() -> None:
    reference = [{"event": "x", "v": 5}, {"event": "x", "v": 50}]

    assert aggregates([{"event": "x", "v": 50}], reference, min="v").verdict == "waiting"  # 5 may arrive
    assert aggregates([{"event": "x", "v": 1}], reference, min="v").verdict == "failed"
    assert aggregates([{"event": "x", "v": 5}], reference, max="v").verdict == "waiting"  # 50 may arrive
    result = aggregates([{"event": "x", "v": 99}], reference, max="v")
    assert result.verdict == "failed"
    assert result.reason == "max(v) of x: expected 50, got 99"


def test_an_average_waits_while_rows_are_due_and_fails_once_the_group_is_complete() -> None:
    reference = [{"event": "x", "v": 10}, {"event": "x", "v": 20}]  # avg 15

    early = aggregates([{"event": "x", "v": 10}], reference, avg="v")
    complete = aggregates([{"event": "x", "v": 10}, {"event": "x", "v": 21}], reference, avg="v")

    assert early.verdict == "waiting"
    assert complete.verdict == "failed"
    assert complete.reason == "avg(v) of x: expected 15, got 15.5"


def test_a_sum_with_refunds_among_the_values_waits_either_way_until_the_group_is_complete() -> None:
    reference = [{"event": "order", "v": 100}, {"event": "order", "v": -30}]  # 70

    above = aggregates([{"event": "order", "v": 100}], reference, sum="v")  # the refund may still arrive
    wrong = aggregates([{"event": "order", "v": 100}, {"event": "order", "v": -20}], reference, sum="v")

    assert above.verdict == "waiting"
    assert wrong.verdict == "failed"


def test_groups_missing_on_one_side() -> None:
    """Not found yet: count and sum 0, avg/min/max none, all waiting. Only found: fails once it has rows or
    values; an extra group whose only measure is a sum of 0 agrees with the reference's 0."""
    spec: dict[str, Any] = {"count": True, "sum": "amount", "avg": "amount"}

    missing = aggregates(
        [{"event": "purchase", "amount": 1000}, {"event": "purchase", "amount": 250.5}], SENT[:3], **spec
    )
    assert missing.verdict == "waiting"
    assert measured(missing) == {
        ("refund", "count"): (1, 0),
        ("refund", "sum(amount)"): (-20, 0),
        ("refund", "avg(amount)"): (-20, None),
    }
    assert "avg(amount) of refund: expected -20, got none" in (missing.reason or "")

    extra = aggregates([*SENT[:3], {"event": "coupon", "amount": 5}], SENT[:3], **spec)
    assert extra.verdict == "failed"
    assert measured(extra) == {
        ("coupon", "count"): (0, 1),
        ("coupon", "sum(amount)"): (0, 5),
        ("coupon", "avg(amount)"): (None, 5),
    }
    assert aggregates([*SENT[:3], {"event": "view", "amount": 0}], SENT[:3], sum="amount").verdict == "passed"


def test_nulls_are_left_out_of_averages_as_sql_leaves_them_out() -> None:
    reference: list[dict[str, Any]] = [{"event": "x", "v": 10}, {"event": "x", "v": None}, {"event": "x"}]

    assert aggregates([{"event": "x", "v": 10}, {"event": "x"}, {"event": "x"}], reference, avg="v").verdict == (
        "passed"
    )


def test_a_value_that_is_not_a_number_fails_clearly() -> None:
    result = aggregates([{"event": "purchase", "amount": "N/A"}, SENT[1]], SENT[:2], sum="amount", count=True)

    assert result.verdict == "failed"
    assert result.reason == "1 value of amount in the stage not a number: N/A; still short: " + (
        "sum(amount) of purchase: expected 1250.5, got 250.5"
    )


def test_without_by_the_whole_run_is_one_group() -> None:
    result = aggregates([{"amount": 1000}], SENT, by=[], sum="amount")

    assert result.verdict == "waiting"
    assert result.counts == [
        {"group": {}, "measure": "sum(amount)", "expected": 1230.5, "actual": 1000, "difference": -230.5}
    ]
    assert result.reason == "waiting for sum(amount): expected 1230.5, got 1000"


def test_nothing_expected_and_nothing_found_passes() -> None:
    assert aggregates([], [], count=True).reason == "no events expected"


def test_rows_the_database_aggregated_are_merged_per_group_with_exact_averages() -> None:
    """A group split over two rows (two ``where`` values): sums and counts add up; the average is 30.5 / 3,
    not the average of the rows' averages (15 and 0.5)."""
    reference = [{"event": "p", "v": 10}, {"event": "p", "v": 20}, {"event": "p", "v": 0.5}]
    rows = [
        {"event": "p", "shop": "a", "tc_count": 2, "tc_sum_v": 30, "tc_n_v": 2, "tc_min_v": 10, "tc_max_v": 20},
        {"event": "p", "shop": "b", "tc_count": 1, "tc_sum_v": "0.5", "tc_n_v": 1, "tc_min_v": 0.5, "tc_max_v": 0.5},
    ]

    result = aggregates(rows, reference, count=True, sum="v", avg="v", min="v", max="v")

    assert result.verdict == "passed", result.reason
    assert (result.expected, result.found) == (3, 3)


def test_a_reference_of_aggregated_rows_without_a_needed_column_cannot_be_evaluated() -> None:
    reference = [{"event": "p", "tc_count": 2, "tc_sum_v": 30}]  # an earlier stage that computed sum(v) only

    assert aggregates([{"event": "p", "v": 15}] * 2, reference, sum="v").verdict == "passed"
    with pytest.raises(PlanError, match="reference's pre-aggregated rows have no tc_max_v"):
        aggregates([{"event": "p", "v": 15}], reference, max="v")


@pytest.mark.parametrize(
    ("tolerance", "message"),
    [({"price": 1}, "names price, which no measure uses"), ({"amount": "lots"}, "'lots' is not a tolerance")],
)
def test_a_tolerance_that_names_no_measure_or_is_no_number_is_a_plan_error(
    tolerance: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        aggregates(SENT, sum="amount", tolerance=tolerance)


def test_severity_warn_lists_what_would_fail_and_the_verdict_ignores_it() -> None:
    found = [{"event": "purchase", "amount": 1000}, {"event": "purchase", "amount": 260}]

    result = aggregates(found, SENT[:2], sum="amount", severity="warn")

    assert result.verdict == "passed"
    assert result.warnings == ["sum(amount) of purchase: expected 1250.5, got 1260"]
    assert result.reason == "1 warning: sum(amount) of purchase: expected 1250.5, got 1260"
    assert len(result.counts) == 1


# -- counts against an earlier counts stage --------------------------------------------------------------------


def counts(found: list[dict[str, Any]], reference: list[dict[str, Any]], **spec: Any) -> Comparison:
    declared = {"with": "earlier", "by": "event", "value": "n", **spec}
    stage = StageSpec.model_validate({"name": "s", "source": "x", "counts": declared})
    return evaluate_stage(stage, ["id"], found, reference)


def test_counts_against_an_earlier_counts_stage_compare_its_counts_not_its_number_of_rows() -> None:
    earlier: list[dict[str, Any]] = [{"event": "click", "n": 100, "test_id": "t1"}, {"event": "view", "n": "7"}]

    same = counts([{"event": "click", "n": 100}, {"event": "view", "n": 7}], earlier)
    short = counts([{"event": "click", "n": 99}, {"event": "view", "n": 7}], earlier)

    assert same.verdict == "passed", same.reason
    assert (same.expected, same.found) == (107, 107)
    assert short.verdict == "waiting"
    assert short.reason == "1 group below the expected count; waiting for event=click 99 of 100"


def test_counts_against_an_aggregates_stage_computed_in_sql_use_its_row_counts() -> None:
    earlier = [{"event": "click", "test_id": "t1", "tc_count": 3, "tc_sum_amount": 0}]

    assert counts([{"event": "click", "n": 3}], earlier).verdict == "passed"


def test_counts_against_events_still_count_the_events() -> None:
    """Events carry the key: a numeric field named like ``value`` in them is not a count."""
    events = [{"id": "e1", "event": "click", "n": 40}, {"id": "e2", "event": "click", "n": 2}]

    result = counts([{"event": "click", "n": 2}], events)

    assert result.verdict == "passed"
    assert result.expected == 2


# -- pushed down to SQL ----------------------------------------------------------------------------------------


def sql_stage(aggregates: dict[str, Any], **keys: Any) -> StageSpec:
    declared = {"with": "expect", **aggregates}
    return StageSpec.model_validate({"name": "wh", "source": "wh", "aggregates": declared, **keys})


def test_a_sql_stage_with_aggregates_asks_the_database_for_groups_keeping_the_where_fields() -> None:
    spec = sql_stage(
        {"by": ["order", "Country"], "count": True, "sum": "amount", "avg": ["amount", "qty"], "min": "qty"},
        query="SELECT * FROM sales",
        where={"test_id": "{test_id}"},
    )
    request = FetchRequest(plan="p", stage=spec, filters={"test_id": ["t1", "t2"]})
    source = SqlSource("wh", SqlOptions(url="postgresql://reader@db/a"))

    compiled = build_statement(postgresql.dialect(), request, source).compile(dialect=postgresql.dialect())

    assert str(compiled) == (
        'SELECT tc_q."order" AS "order", tc_q."Country" AS "Country", tc_q.test_id AS test_id, '
        "COUNT(*) AS tc_count, SUM(tc_q.amount) AS tc_sum_amount, SUM(tc_q.qty) AS tc_sum_qty, "
        "COUNT(tc_q.amount) AS tc_n_amount, COUNT(tc_q.qty) AS tc_n_qty, MIN(tc_q.qty) AS tc_min_qty "
        "FROM (\nSELECT * FROM sales\n) AS tc_q\n"
        "WHERE tc_q.test_id = ANY(%(tc_p0)s)\n"
        'GROUP BY tc_q."order", tc_q."Country", tc_q.test_id'
    )
    assert compiled.params == {"tc_p0": '{"t1","t2"}'}


def test_the_dialects_own_quoting_names_the_columns() -> None:
    spec = sql_stage({"by": "order", "max": "amount"}, table="sales")
    source = SqlSource("wh", SqlOptions(url="mysql://reader@db/a"))

    sql = str(build_statement(mysql.dialect(), FetchRequest(plan="p", stage=spec), source))

    assert sql.startswith("SELECT tc_q.`order` AS `order`, COUNT(*) AS tc_count, MAX(tc_q.amount) AS tc_max_amount")
    assert sql.endswith("GROUP BY tc_q.`order`")


@pytest.mark.parametrize(
    ("aggregates", "keys", "problem"),
    [
        ({"by": "event type", "count": True}, {}, "aggregates: 'event type' is not a plain column name"),
        ({"sum": "a.b"}, {}, "aggregates: 'a.b' is not a plain column name"),
        ({"sum": "x" * 60}, {}, "is named too long to compute its measures in SQL"),
        ({"count": True}, {"select": {"event": "event_name"}}, "'select' cannot rename: alias the columns"),
    ],
)
def test_what_the_database_cannot_compute_is_refused_when_the_plan_loads_and_at_fetch(
    aggregates: dict[str, Any], keys: dict[str, Any], problem: str
) -> None:
    spec = sql_stage(aggregates, table="sales", **keys)
    source = SqlSource("wh", SqlOptions(url="postgresql://reader@db/a"))

    assert problem in (source.check_read(spec) or "")
    with pytest.raises(SourceQueryError, match=re.escape(problem)) as caught:
        build_statement(postgresql.dialect(), FetchRequest(plan="p", stage=spec), source)
    assert caught.value.kind == "permanent"
