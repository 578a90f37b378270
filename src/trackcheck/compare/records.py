"""``compare``: the records of a stage match the reference one to one, by key, field by field."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from itertools import chain, compress, count, repeat
from math import ceil
from operator import eq, is_, is_not, itemgetter, methodcaller, ne
from typing import Any, cast

from trackcheck.compare.checks import (
    Check,
    Record,
    differing,
    display_keys,
    keys_of,
    listing,
    plural,
    same,
    show,
    show_value,
)
from trackcheck.compare.result import Comparison, Verdict
from trackcheck.compare.values import display_key, jsonable
from trackcheck.plan.model import CompareSpec

ABSENT: Any = object()  # a field the record does not have
_Pairing = tuple[list[Record], list[Record], list[Record], list[Record]]
_SAMPLE = 64  # pairs compared first, to choose between a pass over whole records and columns only


def required(complete: float | None, expected: int) -> int:
    """How many of ``expected`` reference keys must be found: all of them, or the ``complete`` share
    (rounded up: 99% of 150 is 149)."""
    if complete is None:
        return expected
    return min(expected, ceil(Decimal(repr(complete)) * expected))


def percent(share: float) -> str:
    """``0.99`` as ``99%``, ``0.995`` as ``99.5%``."""
    return f"{round(share * 100, 6):g}%"


class RecordsCheck(Check[CompareSpec]):
    """Every reference key must be found once, with the same values in the compared fields.

    - ``missing``: reference keys not found (yet): the stage waits for them, or only lists them once the
      ``complete`` share of the reference was found.
    - ``unexpected``: found keys not in the reference: a failure unless ``allow_extra`` (then only evidence).
    - ``duplicates``: keys found more than once (listed in every mode; fields are compared with the last
      one): a failure with ``duplicates: fail``; with ``allow-identical`` only when two copies differ in a
      compared field (at-least-once delivery repeats an event unchanged); never with ``allow``.
    - ``mismatches``: a compared field differs beyond its tolerance, or is absent from the found record:
      a failure, or a reason to keep waiting with ``on_mismatch: wait``.

    Compared fields are ``fields``, or else every field of the reference record except the key. Values match
    as numbers, as instants, or else exactly (see ``compare.values``); Python's own equality counts too, so a
    MySQL ``1`` matches ``true``.
    """

    name = "compare"

    def evaluate(self, found: list[Record], reference: list[Record]) -> Comparison:
        spec = self.spec
        found_keys = keys_of(found, self.key)
        reference_keys = keys_of(reference, self.key)
        missing: list[Any] = []
        unexpected: list[Any] = []
        duplicates: list[Any] = []
        unlike: list[dict[str, Any]] = []
        if found_keys == reference_keys and len(set(found_keys)) == len(found_keys):
            # the common case: a complete read, in the reference's order; pairs line up without lookups
            expected_records, actual_records, expected = reference, found, len(reference)
        else:
            wanted = dict(zip(reference_keys, reference, strict=True))
            expected = len(wanted)
            pairing = self._pair(found, found_keys, wanted)
            if pairing is None:  # a key found twice
                pairing, repeated = self._pair_with_duplicates(found, found_keys, wanted)
                duplicates = [display_key(r, self.key) for r in repeated]
                if spec.duplicates == "allow-identical":
                    unlike = self._unlike_copies(found, found_keys)
            actual_records, expected_records, unmatched, missing_records = pairing
            unexpected = display_keys(unmatched, self.key)
            missing = display_keys(missing_records, self.key)
        absent: set[int] = set()
        mismatches = self._mismatches(expected_records, actual_records, absent)
        return self._conclude(expected, len(found), missing, unexpected, duplicates, unlike, mismatches, absent)

    def _conclude(
        self,
        expected: int,
        found: int,
        missing: list[Any],
        unexpected: list[Any],
        duplicates: list[Any],
        unlike: list[dict[str, Any]],
        mismatches: list[dict[str, Any]],
        absent: set[int],
    ) -> Comparison:
        """The verdict and its reason from the evidence (also the columnar comparison's last step)."""
        spec = self.spec
        duplicates_fail = bool(duplicates) and (spec.duplicates == "fail" or bool(unlike))
        failed = bool(
            duplicates_fail or (unexpected and not spec.allow_extra) or (mismatches and spec.on_mismatch == "fail")
        )
        short = expected - len(missing) < required(spec.complete, expected)  # still waiting for missing keys
        verdict: Verdict = "failed" if failed else "waiting" if short or mismatches else "passed"
        return Comparison(
            verdict=verdict,
            expected=expected,
            found=found,
            missing=missing,
            unexpected=unexpected,
            duplicates=duplicates,
            mismatches=mismatches,
            reason=self._reason(verdict, expected, missing, unexpected, duplicates, unlike, mismatches, absent),
        )

    @staticmethod
    def _pair(found: list[Record], found_keys: list[Any], wanted: dict[Any, Record]) -> _Pairing | None:
        """(found records with a reference, their references, found records without, references not found),
        in the found order (memory is read in the order the source returned it); None if a key is found twice.

        Each found key takes its record out of a copy of ``wanted``, so one pass pairs them and what stays
        in the copy is missing, in the reference's order: two passes over hash tables of a million keys
        where dicts of both sides and lookups each way took four.
        """
        unclaimed = wanted.copy()
        paired = cast("list[Record | None]", list(map(unclaimed.pop, found_keys, repeat(None))))
        missing = list(unclaimed.values())
        if None not in paired:
            return found, cast("list[Record]", paired), [], missing
        unmatched_keys = list(compress(found_keys, map(is_, paired, repeat(None))))
        if any(map(wanted.__contains__, unmatched_keys)) or len(set(unmatched_keys)) != len(unmatched_keys):
            return None  # taken already (or not in the reference, twice): a duplicate
        keep = list(map(is_not, paired, repeat(None)))
        return (
            list(compress(found, keep)),
            cast("list[Record]", list(compress(paired, keep))),
            list(compress(found, map(is_, paired, repeat(None)))),
            missing,
        )

    @staticmethod
    def _pair_with_duplicates(
        found: list[Record], found_keys: list[Any], wanted: dict[Any, Record]
    ) -> tuple[_Pairing, list[Record]]:
        """``_pair`` when keys repeat: the last record found with a key stands for it; and one record of each
        repeated key."""
        by_key = dict(zip(found_keys, found, strict=True))
        duplicates = [by_key[k] for k, n in Counter(found_keys).items() if n > 1]
        actual = list(by_key.values())
        paired = list(map(wanted.get, by_key))
        keep = list(map(is_not, paired, repeat(None)))
        pairing = (
            list(compress(actual, keep)),
            cast("list[Record]", list(compress(paired, keep))),
            list(compress(actual, map(is_, paired, repeat(None)))),
            [r for k, r in wanted.items() if k not in by_key],
        )
        return pairing, duplicates

    def _unlike_copies(self, found: list[Record], found_keys: list[Any]) -> list[dict[str, Any]]:
        """For ``duplicates: allow-identical``: the compared fields in which a later copy of a repeated key
        differs from its first copy, as ``{"key", "field", "first", "other", "absent"}`` (``absent``: which of
        the two lacks the field). Compared fields are ``fields``, else every field of the copies but the key;
        values match by meaning (``25.50`` is ``25.5``), without tolerance: a redelivery is the same event."""
        counts = Counter(found_keys)
        copies: dict[Any, list[Record]] = {}
        for k, record in zip(found_keys, found, strict=True):
            if counts[k] > 1:
                copies.setdefault(k, []).append(record)
        unlike: list[dict[str, Any]] = []
        for records in copies.values():
            first, others = records[0], records[1:]
            fields = self.spec.fields
            if fields is None:
                fields = [f for f in dict.fromkeys(chain.from_iterable(records)) if f not in self.key]
            for field in fields:
                want = first.get(field, ABSENT)
                for other in others:
                    got = other.get(field, ABSENT)
                    if (want is ABSENT) == (got is ABSENT) and (want is ABSENT or same(want, got, None)):
                        continue
                    unlike.append(
                        {
                            "key": display_key(first, self.key),
                            "field": field,
                            "first": None if want is ABSENT else jsonable(want),
                            "other": None if got is ABSENT else jsonable(got),
                            "absent": "first" if want is ABSENT else "other" if got is ABSENT else None,
                        }
                    )
                    break
        return unlike

    def _mismatches(self, expected: list[Record], actual: list[Record], absent: set[int]) -> list[dict[str, Any]]:
        """The field mismatches between paired records (``expected[i]`` was found as ``actual[i]``), in record
        then field order. ``absent`` receives the positions of mismatches where the found record lacks the field.

        Built for a million pairs, with C-level passes. A sample of pairs shows which fields mostly hold
        equal values as Python sees them (same types on both sides): one pass over whole records, on those
        fields together, keeps only the pairs where one of them differs. The other fields (types that differ,
        such as Decimal against float or datetime against ISO text) are compared column by column, after a
        conversion of the whole column (``differing``). Only values that still differ go through the
        number/instant/tolerance rules.
        """
        if not expected:
            return []
        fields = self.spec.fields
        own_fields_only = fields is None  # then a field the reference record lacks is not compared
        if fields is None:
            shape = expected[0].keys()
            same_shape = all(map(eq, map(dict.keys, expected), repeat(shape)))
            names = shape if same_shape else dict.fromkeys(chain.from_iterable(expected))
            fields = [f for f in names if f not in self.key]
        if not fields:
            return []
        # rows[field]: the positions of the pairs to compare in that field; None for every pair
        rows: dict[str, list[int] | None] = dict.fromkeys(fields)
        if len(expected) > _SAMPLE:
            sample_wants, sample_gots = expected[:_SAMPLE], actual[:_SAMPLE]
            alike = [
                f
                for f in fields
                if sum(map(eq, field_values(sample_wants, f), field_values(sample_gots, f))) * 2 >= _SAMPLE
            ]
            if alike:
                pick = itemgetter(*alike)
                try:
                    narrowed = list(compress(count(), map(ne, map(pick, expected), map(pick, actual))))
                except KeyError:  # some record lacks one of them: compare every column in full
                    narrowed = None
                rows.update(dict.fromkeys(alike, narrowed))
        tolerance = self.spec.tolerance
        found: list[MismatchEntry] = []
        subsets: dict[int, tuple[list[Record], list[Record]]] = {}
        for position, field in enumerate(fields):
            chosen = rows[field]
            if chosen is None:
                wanted_records, actual_records = expected, actual
            else:
                if id(chosen) not in subsets:
                    subsets[id(chosen)] = ([expected[i] for i in chosen], [actual[i] for i in chosen])
                wanted_records, actual_records = subsets[id(chosen)]
            wants, gots = field_values(wanted_records, field), field_values(actual_records, field)
            for j, want, value in judged(wants, gots, tolerance.get(field), own_fields_only):
                key = display_key(actual_records[j], self.key)
                found.append(mismatch_entry(j if chosen is None else chosen[j], position, key, field, want, value))
        return in_order(found, absent)

    def _reason(
        self,
        verdict: Verdict,
        expected: int,
        missing: list[Any],
        unexpected: list[Any],
        duplicates: list[Any],
        unlike: list[dict[str, Any]],
        mismatches: list[dict[str, Any]],
        absent: set[int],
    ) -> str:
        spec = self.spec
        parts: list[str] = []
        if duplicates and spec.duplicates == "fail":
            keys = listing(len(duplicates), map(show, duplicates))
            parts.append(
                f"duplicate key {keys}" if len(duplicates) == 1 else f"{len(duplicates)} duplicate keys: {keys}"
            )
        if unlike:
            described = (
                f"{show(u['key'])}.{u['field']} "
                f"{'no such field' if u['absent'] == 'first' else show_value(u['first'])} and "
                f"{'no such field' if u['absent'] == 'other' else show_value(u['other'])}"
                for u in unlike
            )
            repeated = len({show(u["key"]) for u in unlike})
            parts.append(
                f"{plural(repeated, 'duplicate key')} with different values: {listing(len(unlike), described, '; ')}"
            )
        if unexpected and not self.spec.allow_extra:
            parts.append(
                f"{plural(len(unexpected), 'unexpected event')}: {listing(len(unexpected), map(show, unexpected))}"
            )
        if mismatches:
            described = (
                f"{show(m['key'])}.{m['field']} expected {show_value(m['expected'])}, "
                f"got {'no such field' if i in absent else show_value(m['actual'])}"
                for i, m in enumerate(mismatches)
            )
            parts.append(
                f"{plural(len(mismatches), 'field mismatch', 'field mismatches')}: "
                f"{listing(len(mismatches), described, '; ')}"
            )
        if missing:
            keys = listing(len(missing), map(show, missing))
            share = f" (complete: {percent(spec.complete)})" if spec.complete is not None else ""
            short = expected - len(missing) < required(spec.complete, expected)
            parts.append(
                f"{expected - len(missing)} of {expected} expected events found{share}; "
                f"{('waiting for' if verdict == 'waiting' else 'missing') if short else 'missing:'} {keys}"
            )
        if verdict == "passed" and not missing:
            parts.append(
                "the expected event found and matching"
                if expected == 1
                else f"all {expected} expected events found and matching"
                if expected
                else "no events expected"
            )
        if unexpected and self.spec.allow_extra:
            parts.append(f"{plural(len(unexpected), 'extra event')} allowed")
        if duplicates and not unlike and spec.duplicates != "fail":
            identical = " (identical copies)" if spec.duplicates == "allow-identical" else ""
            parts.append(f"{plural(len(duplicates), 'duplicate key')} allowed{identical}")
        return "; ".join(parts)


#: a mismatch with where it sorts: (found row, field position, the found record lacks the field, the mismatch)
MismatchEntry = tuple[int, int, bool, dict[str, Any]]


def judged(wants: list[Any], gots: list[Any], limit: Any, own_fields_only: bool) -> Iterator[tuple[int, Any, Any]]:
    """(position, expected, found) of each pair of one field's values that ``compare`` finds different: beyond
    the ``limit`` tolerance, or absent from the found record. A field the reference record lacks is not compared
    when the spec names no fields (``own_fields_only``), else it is expected to be null. Shared by the row and
    the columnar comparisons, so both judge alike."""
    for j in differing(wants, gots):
        want, value = wants[j], gots[j]
        if want is ABSENT:
            if own_fields_only:
                continue
            want = None
        if value is not ABSENT and same(want, value, limit):
            continue
        yield j, want, value


def mismatch_entry(row: int, position: int, key: Any, field: str, want: Any, value: Any) -> MismatchEntry:
    """A mismatch as evidence shows it (``actual`` null when the found record lacks the field), with its order."""
    mismatch = {
        "key": key,
        "field": field,
        "expected": jsonable(want),
        "actual": None if value is ABSENT else jsonable(value),
    }
    return (row, position, value is ABSENT, mismatch)


def in_order(entries: list[MismatchEntry], absent: set[int]) -> list[dict[str, Any]]:
    """The mismatches by found row, then field; ``absent`` gets the positions of those whose field is missing."""
    entries.sort(key=itemgetter(0, 1))
    absent.update(i for i, entry in enumerate(entries) if entry[2])
    return [entry[3] for entry in entries]


def field_values(records: list[Record], field: str) -> list[Any]:
    """The column of a field, with ABSENT where a record lacks it."""
    try:
        return list(map(itemgetter(field), records))
    except KeyError:
        return list(map(methodcaller("get", field, ABSENT), records))
