"""Comparing what a stage read with its reference: checks, the registry that picks them, their results.

A stage declares its main check under the plan key of that check's name (``compare`` → RecordsCheck,
``counts`` → CountsCheck), and may add ``schema`` (SchemaCheck). ``evaluate_stage`` runs them and merges the
evidence into one Comparison.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from trackcheck.compare.checks import LARGE, Check, Record, collection_paused
from trackcheck.compare.counts import CountsCheck
from trackcheck.compare.records import RecordsCheck
from trackcheck.compare.result import Comparison
from trackcheck.compare.schema import SchemaCheck
from trackcheck.errors import PlanError

if TYPE_CHECKING:
    from trackcheck.plan.model import StageSpec

#: plan key → the check that evaluates what is declared under it; a stage declares exactly one of them
CHECKS: dict[str, type[Check[Any]]] = {check.name: check for check in (RecordsCheck, CountsCheck)}

__all__ = ["CHECKS", "Check", "Comparison", "CountsCheck", "RecordsCheck", "SchemaCheck", "evaluate_stage"]


def main_check(stage: StageSpec, key: list[str]) -> Check[Any]:
    """The check a stage declares (``compare`` or ``counts``), ready to evaluate."""
    for name, check in CHECKS.items():
        spec = getattr(stage, name, None)
        if spec is not None:
            return check(spec, key)
    raise PlanError(f"declares none of {', '.join(CHECKS)}: nothing to compare", stage=stage.name)


def evaluate_stage(stage: StageSpec, key: list[str], found: list[Record], reference: list[Record]) -> Comparison:
    """Judge the records one run found at ``stage`` against its reference: the stage's main check, then its
    JSON Schema if it has one. Schema violations are added to the evidence and make the verdict failed.

    Raises PlanError only when the stage cannot be evaluated (no check declared, unreadable schema file).
    """
    size = max(len(found), len(reference))
    if size < LARGE:  # a run's few records: not even a context manager's cost
        return _evaluate(stage, key, found, reference)
    with collection_paused(size):
        return _evaluate(stage, key, found, reference)


def _evaluate(stage: StageSpec, key: list[str], found: list[Record], reference: list[Record]) -> Comparison:
    result = main_check(stage, key).evaluate(found, reference)
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
