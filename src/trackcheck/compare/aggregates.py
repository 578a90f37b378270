"""``aggregates``: counts, sums, averages, minima and maxima per group agree with the reference's, within
tolerance.

Each side (the records read at the stage, the reference) is reduced to one :class:`Tally` per ``by`` group.
A side holds either raw records (each one row) or **pre-aggregated rows**: what a SQL source returns when it
computed the measures itself (``GROUP BY``, the columns :func:`pushed_columns` names), and what the snapshot
of such a stage holds. They are recognised by their ``tc_count`` column. Several rows of one group are merged
(the engine's batching and a ``where`` list keep the ``where`` fields in the SQL ``GROUP BY``, so one group
may come as one row per ``where`` value): counts and sums add up, minima and maxima combine, and an average
is the merged sum over the merged count of values, never an average of averages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from trackcheck.compare.checks import Check, Record, keys_of, listing, plural, show
from trackcheck.compare.result import Comparison, Verdict
from trackcheck.compare.values import as_number, jsonable
from trackcheck.errors import PlanError
from trackcheck.plan.model import AggregatesSpec

Kind = Literal["count", "sum", "avg", "min", "max"]
#: the row count of a pre-aggregated row; its presence is what marks a row as pre-aggregated
COUNT_COLUMN = "tc_count"


@dataclass(frozen=True)
class Pushed:
    """One column of a pre-aggregated row: ``function`` of ``field`` (None: ``COUNT(*)``), named ``column``."""

    column: str
    function: Literal["COUNT", "SUM", "MIN", "MAX"]
    field: str | None


def pushed_columns(spec: AggregatesSpec) -> list[Pushed]:
    """The columns a database computes per group for ``spec``, the row count first.

    An average is pushed down as its two parts, ``SUM(f)`` and ``COUNT(f)`` (the values that are not null), so
    that groups split over several rows still merge into the exact average.
    """
    columns = [Pushed(COUNT_COLUMN, "COUNT", None)]
    columns += [Pushed(f"tc_sum_{f}", "SUM", f) for f in _unique(spec.sum + spec.avg)]
    columns += [Pushed(f"tc_n_{f}", "COUNT", f) for f in _unique(spec.avg)]
    columns += [Pushed(f"tc_min_{f}", "MIN", f) for f in _unique(spec.min)]
    columns += [Pushed(f"tc_max_{f}", "MAX", f) for f in _unique(spec.max)]
    return columns


@dataclass(frozen=True)
class Measure:
    """One requested measure: ``count``, or ``sum``/``avg``/``min``/``max`` of a field."""

    kind: Kind
    field: str | None = None

    @property
    def name(self) -> str:
        return self.kind if self.field is None else f"{self.kind}({self.field})"


def measures(spec: AggregatesSpec) -> list[Measure]:
    """The measures ``spec`` asks for, in the order the evidence lists them."""
    per_field: tuple[tuple[Kind, list[str]], ...] = (
        ("sum", spec.sum),
        ("avg", spec.avg),
        ("min", spec.min),
        ("max", spec.max),
    )
    found = [Measure("count")] if spec.count else []
    for kind, fields in per_field:
        found += [Measure(kind, f) for f in _unique(fields)]
    return found


@dataclass
class Tally:
    """What one side holds in one group: its rows and, per field, the sum, number, minimum and maximum of
    its numbers (nulls left out, as SQL leaves them out)."""

    rows: Decimal = Decimal(0)
    sums: dict[str, Decimal] = field(default_factory=dict)
    numbers: dict[str, Decimal] = field(default_factory=dict)
    mins: dict[str, Decimal] = field(default_factory=dict)
    maxs: dict[str, Decimal] = field(default_factory=dict)
    #: fields with a negative value (a refund): their sum may move either way as rows arrive
    signed: set[str] = field(default_factory=set)

    def value(self, measure: Measure) -> Decimal | None:
        """The measure over this group; a count or sum of nothing is 0, any other measure of nothing None."""
        f = measure.field
        if measure.kind == "count" or f is None:
            return self.rows
        if measure.kind == "sum":
            return self.sums.get(f, Decimal(0))
        if measure.kind == "avg":
            n = self.numbers.get(f)
            return self.sums.get(f, Decimal(0)) / n if n else None
        return (self.mins if measure.kind == "min" else self.maxs).get(f)

    def add(self, f: str, number: Decimal) -> None:
        """One value of ``f`` (of a raw record)."""
        self.sums[f] = self.sums.get(f, Decimal(0)) + number
        self.numbers[f] = self.numbers.get(f, Decimal(0)) + 1
        self.extreme(f, number)

    def extreme(self, f: str, number: Decimal) -> None:
        """A value that may be the minimum or maximum of ``f``."""
        if f not in self.mins or number < self.mins[f]:
            self.mins[f] = number
        if f not in self.maxs or number > self.maxs[f]:
            self.maxs[f] = number
        if number < 0:
            self.signed.add(f)


@dataclass
class Side:
    """One side reduced per group: tallies, a record showing each group, values that are not numbers."""

    tallies: dict[Any, Tally] = field(default_factory=dict)
    examples: dict[Any, Record] = field(default_factory=dict)
    #: field -> the values that are not numbers (and not null)
    odd: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(sum((t.rows for t in self.tallies.values()), Decimal(0)))


def reduce_records(records: list[Record], spec: AggregatesSpec, what: str) -> Side:
    """``records`` per ``spec.by`` group: pre-aggregated rows (with ``tc_count``) merged, raw records tallied.

    Raises PlanError when pre-aggregated rows lack a column a measure needs (``what``, "stage" or "reference",
    says which side: an earlier stage computed other measures).
    """
    side = Side()
    fields = _unique(spec.sum + spec.avg + spec.min + spec.max)
    groups = keys_of(records, spec.by) if spec.by else [()] * len(records)
    pre = bool(records) and all(COUNT_COLUMN in record for record in records)
    if pre:
        lacking = sorted({p.column for p in pushed_columns(spec)} - set().union(*map(set, records)))
        if lacking:
            raise PlanError(
                f"the {what}'s pre-aggregated rows have no {', '.join(lacking)}: the stage they come from "
                "computed other aggregates; ask it for the same measures"
            )
    for group, record in zip(groups, records, strict=True):
        tally = side.tallies.get(group)
        if tally is None:
            tally = side.tallies[group] = Tally()
            side.examples[group] = record
        if pre:
            _merge_row(tally, record, spec, side)
        else:
            tally.rows += 1
            for f in fields:
                value = record.get(f)
                if value is None:
                    continue
                number = as_number(value)
                if number is None:
                    side.odd.setdefault(f, []).append(value)
                else:
                    tally.add(f, number)
    return side


def _merge_row(tally: Tally, row: Record, spec: AggregatesSpec, side: Side) -> None:
    """Add one pre-aggregated row (the columns of ``pushed_columns``) to ``tally``."""

    def number(column: str, f: str) -> Decimal | None:
        value = row.get(column)
        found = as_number(value)
        if found is None and value is not None:
            side.odd.setdefault(f, []).append(value)
        return found

    tally.rows += number(COUNT_COLUMN, "count") or 0
    for f in _unique(spec.sum + spec.avg):
        total = number(f"tc_sum_{f}", f)
        if total is None:
            continue  # SQL's SUM of no values
        n = number(f"tc_n_{f}", f) if f"tc_n_{f}" in row else None
        tally.sums[f] = tally.sums.get(f, Decimal(0)) + total
        tally.numbers[f] = tally.numbers.get(f, Decimal(0)) + (n or 0)
        if total < 0:
            tally.signed.add(f)
    for f in _unique(spec.min + spec.max):
        for column in (f"tc_min_{f}", f"tc_max_{f}"):
            if column in row:
                extreme = number(column, f)
                if extreme is not None:
                    tally.extreme(f, extreme)


@dataclass(frozen=True)
class Tolerance:
    """How far a measure may be from the expected value: ``amount`` absolute, or a share of it (``5%``)."""

    amount: Decimal = Decimal(0)
    relative: bool = False
    text: str = ""

    def allowed(self, expected: Decimal | None) -> Decimal:
        if not self.relative:
            return self.amount
        return Decimal(0) if expected is None else abs(expected) * self.amount / 100


def tolerances(spec: AggregatesSpec, wanted: list[Measure]) -> dict[str, Tolerance]:
    """Each measure's tolerance: the one named by the measure (``sum(amount)``), else by its field
    (``amount``; ``count`` for the count). Raises PlanError for a name no measure has, or a value that is
    neither a non-negative number nor a percentage."""
    names = {m.name for m in wanted} | {m.field for m in wanted if m.field is not None}
    unknown = sorted(set(spec.tolerance) - names)
    if unknown:
        raise PlanError(
            f"aggregates.tolerance names {', '.join(unknown)}, which no measure uses "
            f"(measures: {', '.join(m.name for m in wanted)})"
        )
    parsed = {name: _tolerance(name, value) for name, value in spec.tolerance.items()}
    result: dict[str, Tolerance] = {}
    for m in wanted:
        chosen = parsed.get(m.name) or (parsed.get(m.field) if m.field is not None else None)
        result[m.name] = chosen or Tolerance()
    return result


def _tolerance(name: str, value: float | str) -> Tolerance:
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.endswith("%"):
        share = as_number(text[:-1])
        if share is not None and share >= 0:
            return Tolerance(share, True, text)
    elif not isinstance(text, bool):
        number = as_number(text)
        if number is not None and number >= 0:
            return Tolerance(number, False, show(jsonable(number)))
    raise PlanError(f"aggregates.tolerance.{name}: {value!r} is not a tolerance: write a number or a percentage")


State = Literal["match", "waiting", "failed"]


def judge(
    measure: Measure, want: Decimal | None, have: Decimal | None, allowed: Decimal, *, rows_due: bool, signed: bool
) -> State:
    """Whether a measure matches, may still come to match as rows arrive (waiting), or can no longer match.

    Only what arriving rows can change waits: a count, a sum of non-negative values and a maximum below
    expected, a minimum above it, a value not there yet. A sum of values with negatives among them and an
    average move either way, so they wait while the stage has fewer rows in the group than the reference
    (``rows_due``). A value where the reference has none fails.
    """
    if want is None:
        return "match" if have is None else "failed"
    if have is None:
        return "waiting"
    if abs(have - want) <= allowed:
        return "match"
    below = have < want
    kind = measure.kind
    if kind == "count" or (kind == "sum" and not signed) or kind == "max":
        return "waiting" if below else "failed"
    if kind == "min":
        return "failed" if below else "waiting"
    return "waiting" if rows_due else "failed"


class AggregatesCheck(Check[AggregatesSpec]):
    """Per ``by`` group, each requested measure over the stage's records must equal the same measure over
    the reference's, within its tolerance.

    Numbers are read as ``as_number`` reads them (text ``"25.50"`` is 25.5); nulls are left out, as SQL
    leaves them out. A group only one side has is compared like any other: on the other side its count
    and sum are 0 and its average, minimum and maximum absent, so a group not found yet waits and a group
    the reference lacks fails once it has rows (count) or a value (average, minimum, maximum). See
    ``judge`` for what waits and what fails; a value in a measured field that is not a number fails.

    ``counts`` lists each measure beyond tolerance as ``{"group", "measure", "expected", "actual",
    "difference"}``; ``expected`` and ``found`` are the two sides' row counts. With ``severity: warn``,
    what would fail is listed in ``warnings`` and the verdict is waiting or passed as the rest says.
    """

    name = "aggregates"

    def evaluate(self, found: list[Record], reference: list[Record]) -> Comparison:
        spec = self.spec
        wanted = measures(spec)
        allowances = tolerances(spec, wanted)
        ref, got = reduce_records(reference, spec, "reference"), reduce_records(found, spec, "stage")
        failed: list[tuple[dict[str, Any], str]] = []
        waiting: list[tuple[dict[str, Any], str]] = []
        inexact = False
        empty = Tally()
        groups = list(dict.fromkeys([*ref.tallies, *got.tallies]))
        for group in groups:
            want_tally, have_tally = ref.tallies.get(group, empty), got.tallies.get(group, empty)
            shown = {f: jsonable((ref.examples.get(group) or got.examples[group]).get(f)) for f in spec.by}
            for measure in wanted:
                want, have = want_tally.value(measure), have_tally.value(measure)
                tolerance = allowances[measure.name]
                signed = measure.field in want_tally.signed or measure.field in have_tally.signed
                rows_due = have_tally.rows < want_tally.rows
                state = judge(measure, want, have, tolerance.allowed(want), rows_due=rows_due, signed=signed)
                inexact = inexact or (state == "match" and want != have)
                if state != "match":
                    entry = _entry(shown, measure, want, have)
                    text = _described(measure, entry["group"], want, have, tolerance)
                    (failed if state == "failed" else waiting).append((entry, text))
        odd = [
            f"{plural(len(values), 'value')} of {f} in the {what} not a number: "
            + listing(len(values), (show(jsonable(v)) for v in values))
            for what, side in (("stage", got), ("reference", ref))
            for f, values in side.odd.items()
        ]
        problems = odd + [text for _, text in failed]
        warn = spec.severity == "warn" and bool(problems)
        verdict: Verdict = "failed" if problems and not warn else "waiting" if waiting else "passed"
        parts: list[str] = []
        if not warn:
            parts += odd
            if failed:
                parts.append(listing(len(failed), (text for _, text in failed), "; "))
        if waiting:
            lead = "waiting for " if verdict == "waiting" else "still short: "
            parts.append(lead + listing(len(waiting), (text for _, text in waiting), "; "))
        if verdict == "passed" and not warn:
            agree = "within tolerance" if inexact else "match"
            parts.append(f"aggregates {agree} for {plural(len(groups), 'group')}" if groups else "no events expected")
        if warn:
            parts.append(f"{plural(len(problems), 'warning')}: " + listing(len(problems), problems, "; "))
        return Comparison(
            verdict=verdict,
            expected=ref.rows,
            found=got.rows,
            counts=[entry for entry, _ in failed + waiting],
            warnings=problems if warn else [],
            reason="; ".join(parts),
        )


def _entry(group: dict[str, Any], measure: Measure, want: Decimal | None, have: Decimal | None) -> dict[str, Any]:
    difference = None if want is None or have is None else jsonable(have - want)
    return {
        "group": group,
        "measure": measure.name,
        "expected": jsonable(want),
        "actual": jsonable(have),
        "difference": difference,
    }


def _described(
    measure: Measure, group: dict[str, Any], want: Decimal | None, have: Decimal | None, tolerance: Tolerance
) -> str:
    """``sum(amount) of purchase: expected 1250.5, got 1199 (tolerance 1%)``."""
    of = ""
    if len(group) == 1:
        of = f" of {show(next(iter(group.values())))}"
    elif group:
        of = " of (" + ", ".join(f"{k}={show(v)}" for k, v in group.items()) + ")"
    allowed = f" (tolerance {tolerance.text})" if tolerance.text else ""
    return f"{measure.name}{of}: expected {_number(want)}, got {_number(have)}{allowed}"


def _number(number: Decimal | None) -> str:
    """A measure as a reason shows it: at most 6 decimals, no trailing zeros; ``none`` for no value."""
    if number is None:
        return "none"
    if number.adjusted() < 20:
        number = round(number, 6)
    text = format(number.normalize(), "f")
    return "0" if text == "-0" else text


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
