"""``counts``: a stage that returns aggregates (a count per group) agrees with the reference's records, or with
the counts of an earlier aggregate stage."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from trackcheck.compare.aggregates import COUNT_COLUMN
from trackcheck.compare.checks import Check, Record, keys_of, listing, plural, show, show_value
from trackcheck.compare.result import Comparison, Verdict
from trackcheck.compare.values import as_number, jsonable
from trackcheck.plan.model import CountsSpec


class CountsCheck(Check[CountsSpec]):
    """Each found record is one group (its ``by`` fields) with a count in its ``value`` field; the expected
    count of a group is the number of reference records in it, or, when the reference is itself group rows
    (an earlier ``counts`` stage, or an ``aggregates`` stage computed by its database), the sum of their
    counts (see ``_count_field``).

    Per group: ``difference = actual - expected``, where a group that was not found counts 0 and a group
    found twice is summed. ``tolerance`` is absolute (``2``) or a share of the expected count (``"5%"``).

    - a count above expected beyond tolerance: failed (events were duplicated or invented);
    - a found group with no reference records: failed, unless ``allow_extra`` (then listed with expected 0);
    - a count that is not a number: failed;
    - a count below expected beyond tolerance: waiting (events may still be arriving);
    - otherwise passed.

    ``counts`` lists only the groups that differ beyond tolerance (plus allowed extra groups and counts that
    are not numbers), as ``{"group": {by: value}, "expected", "actual", "difference"}``; ``expected`` and
    ``found`` are the totals.
    """

    name = "counts"

    def evaluate(self, found: list[Record], reference: list[Record]) -> Comparison:
        spec = self.spec
        reference_groups = keys_of(reference, spec.by)
        expected: dict[Any, int | Decimal] = dict(Counter(reference_groups))
        count_field = self._count_field(reference)
        if count_field is not None:
            expected = {}
            for group, record in zip(reference_groups, reference, strict=True):
                expected[group] = expected.get(group, 0) + (as_number(record[count_field]) or 0)
        examples = dict(zip(reference_groups, reference, strict=True))

        actual: dict[Any, Decimal] = {}
        not_numbers: list[dict[str, Any]] = []
        bad_groups: set[Any] = set()
        for group, record in zip(keys_of(found, spec.by), found, strict=True):
            count = as_number(record.get(spec.value))
            if count is None or not count.is_finite():
                not_numbers.append(self._entry(record, expected.get(group, 0), jsonable(record.get(spec.value))))
                bad_groups.add(group)
                continue
            actual[group] = actual.get(group, Decimal(0)) + count
            examples.setdefault(group, record)

        over: list[dict[str, Any]] = []
        under: list[dict[str, Any]] = []
        extra: list[dict[str, Any]] = []
        inexact = 0
        for group, want in expected.items():
            if group in bad_groups:
                continue
            got = actual.get(group, Decimal(0))
            inexact += got != want
            if got - want > self._allowed(want):
                over.append(self._entry(examples[group], want, got))
            elif want - got > self._allowed(want):
                under.append(self._entry(examples[group], want, got))
        for group, got in actual.items():
            if group not in expected and group not in bad_groups and got > self._allowed(0):
                extra.append(self._entry(examples[group], 0, got))

        failed = bool(not_numbers or over or (extra and not spec.allow_extra))
        verdict: Verdict = "failed" if failed else "waiting" if under else "passed"
        return Comparison(
            verdict=verdict,
            expected=int(sum(expected.values(), Decimal(0))),
            found=int(sum(actual.values(), Decimal(0))),
            counts=not_numbers + over + under + extra,
            reason=self._reason(verdict, len(expected), bool(inexact), not_numbers, over, under, extra),
        )

    def _count_field(self, reference: list[Record]) -> str | None:
        """The field holding each reference record's count when the reference is group rows, else None
        (each reference record is one event and counts 1).

        Group rows are recognised by their shape: every one holds a number in this check's ``value`` field
        (an earlier ``counts`` stage naming its count the same) or in ``tc_count`` (an ``aggregates`` stage
        whose database computed it), and none holds a key field that is not a ``by`` field (events do).
        """
        if not reference:
            return None
        event_fields = [f for f in self.key if f not in self.spec.by]
        if any(f in record for record in reference for f in event_fields):
            return None
        for candidate in (self.spec.value, COUNT_COLUMN):
            if all(as_number(record.get(candidate)) is not None for record in reference):
                return candidate
        return None

    def _allowed(self, expected: int | Decimal) -> Decimal:
        tolerance = self.spec.tolerance
        if isinstance(tolerance, str):  # "5%", validated by the plan
            return Decimal(tolerance.rstrip("%").strip()) * expected / 100
        return Decimal(repr(tolerance))

    def _entry(self, record: Record, expected: int | Decimal, actual: Any) -> dict[str, Any]:
        group = {field: jsonable(record.get(field)) for field in self.spec.by}
        difference = jsonable(actual - expected) if isinstance(actual, Decimal) else None
        return {"group": group, "expected": jsonable(expected), "actual": jsonable(actual), "difference": difference}

    def _reason(
        self,
        verdict: Verdict,
        groups: int,
        inexact: bool,
        not_numbers: list[dict[str, Any]],
        over: list[dict[str, Any]],
        under: list[dict[str, Any]],
        extra: list[dict[str, Any]],
    ) -> str:
        parts: list[str] = []
        if not_numbers:
            shown = (f"{_show_group(e['group'])} has {show_value(e['actual'])}" for e in not_numbers)
            parts.append(
                f"{plural(len(not_numbers), 'count')} in '{self.spec.value}' not a number: "
                f"{listing(len(not_numbers), shown)}"
            )
        if over:
            parts.append(f"{plural(len(over), 'group')} above the expected count: {_described(over)}")
        if extra and not self.spec.allow_extra:
            shown = (f"{_show_group(e['group'])} ({show_value(e['actual'])})" for e in extra)
            parts.append(f"{plural(len(extra), 'unexpected group')}: {listing(len(extra), shown)}")
        if under:
            waiting = "waiting for " if verdict == "waiting" else ""
            parts.append(f"{plural(len(under), 'group')} below the expected count; {waiting}{_described(under)}")
        if verdict == "passed":
            agree = "within tolerance" if inexact else "match"
            parts.append(f"counts {agree} for {plural(groups, 'group')}" if groups else "no events expected")
        if extra and self.spec.allow_extra:
            parts.append(f"{plural(len(extra), 'extra group')} allowed")
        return "; ".join(parts)


def _show_group(group: dict[str, Any]) -> str:
    text = ", ".join(f"{field}={show(value)}" for field, value in group.items())
    return text if len(group) == 1 else f"({text})"


def _described(entries: list[dict[str, Any]]) -> str:
    shown = (f"{_show_group(e['group'])} {show_value(e['actual'])} of {e['expected']}" for e in entries)
    return listing(len(entries), shown)
