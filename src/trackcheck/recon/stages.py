"""A plan's stage compared by checksum (``compare: {with: STAGE, method: checksum}``): its table and the reference
stage's, each narrowed to one run's ``where``, reconciled in their databases, and the result judged as the
``compare`` check judges records.

Nothing is read into a snapshot: millions of rows stay where they are, and the stage's evidence is the
reconciliation's (the differences counted, the first of each kind listed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trackcheck.compare import apply_severity
from trackcheck.compare.checks import listing, plural, show
from trackcheck.compare.records import percent, required
from trackcheck.compare.result import Comparison, Verdict
from trackcheck.recon.drill import ReconSpec, Table
from trackcheck.sources.sql import SqlRead, SqlSource

if TYPE_CHECKING:
    from trackcheck.plan.model import CompareSpec, StageSpec
    from trackcheck.recon.result import Reconciliation

#: differences of each kind a stage's evidence lists (all are counted)
LISTED = 100


def stage_table(source: SqlSource, stage: StageSpec, where: Mapping[str, Any]) -> Table:
    """The rows of ``stage`` that belong to one run: its table or query, filtered by the run's ``where`` values
    (bound, as when the stage is read)."""
    read = SqlRead.of(stage)
    filters = {field: value if isinstance(value, list) else [value] for field, value in where.items()}
    return Table(source, table=read.table, query=read.query, filters=filters)


def recon_spec(spec: CompareSpec, key: list[str]) -> ReconSpec:
    """What the stage compares: its key, its ``fields`` (or every column both have), its tolerances, and the
    time field its tables are cut by, if not the key."""
    bucket = spec.bucket
    return ReconSpec(
        key=key,
        fields=list(spec.fields) if spec.fields else None,
        tolerance=spec.tolerance,
        limit=LISTED,
        bucket_by=bucket.by if bucket is not None else None,
        bucket_seconds=int(bucket.size.total_seconds()) if bucket is not None else 3600,
    )


def judge(spec: CompareSpec, result: Reconciliation) -> Comparison:
    """The verdict the ``compare`` check would give the same differences: unexpected keys fail unless
    ``allow_extra``, changed rows fail (or wait, with ``on_mismatch: wait``), duplicates fail with ``duplicates:
    fail`` (with ``allow-identical`` only when a key's copies differ), and missing keys wait until the timeout,
    or pass once the ``complete`` share of the reference is there."""
    counts = result.differences
    expected = result.left.rows
    duplicates_fail = counts["duplicates"] > 0 and (
        spec.duplicates == "fail" or (spec.duplicates == "allow-identical" and result.unlike_duplicates > 0)
    )
    changed = counts["changed"] > 0
    failed = (
        duplicates_fail
        or (counts["unexpected"] > 0 and not spec.allow_extra)
        or (changed and spec.on_mismatch == "fail")
    )
    short = expected - counts["missing"] < required(spec.complete, expected)
    verdict: Verdict = "failed" if failed else "waiting" if short or changed else "passed"
    comparison = Comparison(
        verdict=verdict,
        expected=expected,
        found=result.right.rows,
        missing=result.missing,
        unexpected=result.unexpected,
        duplicates=[d["key"] for d in result.duplicates],
        mismatches=result.mismatches,
        reason=_reason(spec, result, verdict),
    )
    return apply_severity(spec, comparison)


def _reason(spec: CompareSpec, result: Reconciliation, verdict: Verdict) -> str:
    counts = result.differences
    expected, found = result.left.rows, result.right.rows
    said = [f"checksums of {expected:,} reference row{'s' * (expected != 1)} and {found:,} here"]
    for kind, listed in (("missing", result.missing), ("unexpected", result.unexpected)):
        if counts[kind]:
            said.append(f"{counts[kind]:,} {kind} ({listing(counts[kind], map(show, listed))})")
    if counts["changed"]:
        fields = sorted({m["field"] for m in result.mismatches})
        said.append(f"{plural(counts['changed'], 'row')} changed ({', '.join(fields)})")
    if counts["duplicates"]:
        said.append(f"{plural(counts['duplicates'], 'duplicate key')}")
    if verdict == "passed" and counts["missing"] and spec.complete is not None:
        said.append(f"{percent(spec.complete)} of the reference is enough")
    if len(said) == 1:
        said.append("every row matches")
    return "; ".join(said)
