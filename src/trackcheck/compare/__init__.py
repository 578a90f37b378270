"""Comparing what a stage read with its reference: checks, the registry that picks them, their results.

A stage declares its main check under the plan key of that check's name (``compare`` → RecordsCheck,
``counts`` → CountsCheck), and may add ``schema`` (SchemaCheck). ``evaluate_stage`` runs them and merges the
evidence into one Comparison.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from trackcheck.compare.absent import AbsentCheck
from trackcheck.compare.aggregates import AggregatesCheck
from trackcheck.compare.checks import LARGE, Check, Record, collection_paused, plural
from trackcheck.compare.counts import CountsCheck
from trackcheck.compare.records import RecordsCheck, required
from trackcheck.compare.result import Comparison
from trackcheck.compare.schema import SchemaCheck
from trackcheck.compare.tables import TableRecords, reference_records
from trackcheck.errors import PlanError

if TYPE_CHECKING:
    import pyarrow as pa

    from trackcheck.plan.model import StageSpec

#: plan key → the check that evaluates what is declared under it; a stage declares exactly one of them
CHECKS: dict[str, type[Check[Any]]] = {
    check.name: check for check in (RecordsCheck, CountsCheck, AggregatesCheck, AbsentCheck)
}

__all__ = [
    "CHECKS",
    "Check",
    "Comparison",
    "CountsCheck",
    "RecordsCheck",
    "SchemaCheck",
    "TableRecords",
    "evaluate_stage",
    "in_columns",
]


def main_check(stage: StageSpec, key: list[str]) -> Check[Any]:
    """The check a stage declares (``compare`` or ``counts``), ready to evaluate."""
    for name, check in CHECKS.items():
        spec = getattr(stage, name, None)
        if spec is not None:
            return check(spec, key)
    raise PlanError(f"declares none of {', '.join(CHECKS)}: nothing to compare", stage=stage.name)


def evaluate_stage(
    stage: StageSpec, key: list[str], found: list[Record] | TableRecords, reference: list[Record] | pa.Table
) -> Comparison:
    """Judge the records one run found at ``stage`` against its reference: the stage's main check, then its
    JSON Schema if it has one. Schema violations are added to the evidence and make the verdict failed.

    Rows read in columns (``TableRecords``) are compared in columns when the stage's check is ``compare``
    alone (``ColumnarRecordsCheck``: the same verdict and evidence); for any other check they become records.
    A reference in columns (an earlier stage's snapshot kept so) is compared as it is with rows in columns, and
    as the records its snapshot would have held (``reference_records``) with records.

    Raises PlanError only when the stage cannot be evaluated (no check declared, unreadable schema file).
    """
    if isinstance(found, TableRecords):
        if in_columns(stage):
            from trackcheck.compare.columnar import ColumnarRecordsCheck

            assert stage.compare is not None  # in_columns says so
            check = ColumnarRecordsCheck(stage.compare, key)
            return apply_severity(check.spec, check.evaluate_table(found.table, reference))
        found = list(found)
    reference = reference_records(reference)
    size = max(len(found), len(reference))
    if size < LARGE:  # a run's few records: not even a context manager's cost
        return _evaluate(stage, key, found, reference)
    with collection_paused(size):
        return _evaluate(stage, key, found, reference)


def in_columns(stage: StageSpec) -> bool:
    """Whether ``stage``'s comparison can be made on its rows in columns: ``compare`` by rows, with no
    ``select`` (a per-record transformation) and no ``schema`` (validated record by record)."""
    # a stage declares one main check: with ``compare`` it is RecordsCheck
    return stage.compare is not None and stage.compare.method == "rows" and not stage.select and stage.schema_ is None


def _evaluate(stage: StageSpec, key: list[str], found: list[Record], reference: list[Record]) -> Comparison:
    check = main_check(stage, key)
    result = _null_paths(stage, found, apply_severity(check.spec, check.evaluate(found, reference)))
    if stage.schema_ is None:
        return result
    try:
        schema = SchemaCheck(stage.schema_, key).evaluate(found, reference)
    except PlanError as exc:
        raise PlanError(exc.message, stage=stage.name, **exc.context) from exc
    if not schema.violations:
        return result
    reasons = [schema.reason, result.reason] if result.verdict != "failed" else [result.reason, schema.reason]
    return replace(result, verdict="failed", violations=schema.violations, reason="; ".join(r for r in reasons if r))


def _null_paths(stage: StageSpec, found: list[Record], result: Comparison) -> Comparison:
    """``result`` naming, in ``warnings`` and its reason, each ``select`` field that is null in every found
    record: a path that matches nothing gives null without an error, so a misspelt path would otherwise look
    like events that arrived wrong. One pass, which ends at the first record once every field has a value."""
    if not stage.select or not found:
        return result
    unseen = set(stage.select)
    for record in found:
        unseen = {name for name in unseen if record.get(name) is None}
        if not unseen:
            return result
    where = f"all {len(found)} records" if len(found) > 1 else "the 1 record found"
    notes = [f"select.{name} is null in {where}: check the path" for name in stage.select if name in unseen]
    reason = "; ".join([*([result.reason] if result.reason else []), *notes])
    return replace(result, warnings=[*result.warnings, *notes], reason=reason)


def apply_severity(spec: Any, result: Comparison) -> Comparison:
    """``result`` of a main check declared with ``severity: warn``: what failed it becomes a warning (its
    reason, as one sentence of ``warnings``), and the verdict what it would be without that failure.

    That verdict is read from the evidence: ``waiting`` while data is still to come (reference keys
    ``missing``, beyond the ``complete`` share when the check declares one; groups below their expected
    count: ``counts`` entries with a negative ``difference``), else ``passed``. The evidence lists stay as
    the check made them. An ``absent`` stage still passes only after its ``for`` (the engine's decision).
    A check of ``severity: fail`` (the default), one that did not fail, or one that judged its own warnings
    and so never fails under ``warn`` (``aggregates``), is returned as it is. Public so that a check run
    outside ``evaluate_stage`` can apply the same rule.
    """
    if getattr(spec, "severity", "fail") != "warn" or result.verdict != "failed":
        return result
    warnings = [*result.warnings, result.reason or "the check failed"]
    found = result.expected - len(result.missing)
    short = bool(result.missing) and found < required(getattr(spec, "complete", None), result.expected)
    below = any(isinstance(c.get("difference"), int | float) and c["difference"] < 0 for c in result.counts)
    return replace(
        result,
        verdict="waiting" if short or below else "passed",
        warnings=warnings,
        reason=f"{plural(len(warnings), 'warning')} (severity: warn): {'; '.join(warnings)}",
    )
