"""``compare`` over columns: found rows as an Arrow table, the same verdict and evidence as ``RecordsCheck``.

The row path turns every found row into a dict, then compares dicts. Here the found rows stay an Arrow table
(``sources.columnar``), and the reference is turned into Arrow columns where its values allow it (or given as
an Arrow table: a snapshot read in columns). Keys are paired with one hash lookup in Arrow; each compared field
is tested in Arrow for the pairs that are *certainly* equal as ``RecordsCheck`` judges them (the same text;
the same number, written as plain decimal text; the same instant, from ISO text ``values.as_instant`` reads
too); only the pairs left go through ``RecordsCheck``'s own value rules, value by value. So the evidence is
``RecordsCheck``'s, in its order and words, by construction.

``RecordsCheck`` itself evaluates (on the rows as dicts) what this path does not cover: a composite key, a
key column that is neither integers nor text starting with a letter, null keys, a key found more than once
(then which copy stands for the key and whether copies differ are decided row by row), a key the reference
holds twice or in another form (``"5"`` for ``5``). A field whose values Arrow cannot hold as one typed column
(mixed types, a field some reference records lack) is compared in Python, as the row path does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trackcheck.compare.checks import collection_paused, display_keys, keys_of
from trackcheck.compare.records import (
    ABSENT,
    MismatchEntry,
    RecordsCheck,
    field_values,
    in_order,
    judged,
    mismatch_entry,
)
from trackcheck.compare.values import jsonable

if TYPE_CHECKING:
    import pyarrow as pa

    from trackcheck.compare.checks import Record
    from trackcheck.compare.result import Comparison

#: ``values._INSTANT``, with at most microseconds: ISO text both Arrow and ``as_instant`` read the same way
_INSTANT = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$"
#: Python types a reference column may hold (one of them, and None) to become an Arrow column whose values
#: read back as they were: mixing ints and floats would read 1 back as 1.0, datetimes would lose their zone
_ARROW_SAFE = (str, int, float, bool)


class ColumnarRecordsCheck(RecordsCheck):
    """``RecordsCheck`` for found rows held in columns (``evaluate_table``)."""

    def evaluate_table(self, found: pa.Table, reference: list[Record] | pa.Table) -> Comparison:
        """What ``evaluate(found.to_pylist(), reference)`` returns (``reference.to_pylist()`` for a table),
        without a dict per found row."""
        with collection_paused(max(found.num_rows, len(reference))):
            return self._evaluate_table(found, reference)

    def _evaluate_table(self, found: pa.Table, reference: list[Record] | pa.Table) -> Comparison:
        import numpy
        import pyarrow as pa
        import pyarrow.compute as pc

        found_keys = self._found_keys(found)
        numeric = pa.types.is_integer(found.schema.field(self.key[0]).type) if found_keys is not None else False
        reference_keys = None if found_keys is None else self._reference_keys(reference, numeric)
        if found_keys is None or reference_keys is None:
            records = reference.to_pylist() if isinstance(reference, pa.Table) else reference
            return self.evaluate(found.to_pylist(), records)
        at = pc.index_in(found_keys, value_set=reference_keys)  # the reference row of each found row
        paired = pc.is_valid(at)
        pairs = pc.indices_nonzero(paired)
        references = pc.drop_null(at)
        key_column = found.column(self.key[0])
        unexpected = [jsonable(v) for v in key_column.filter(pc.invert(paired)).to_pylist()]
        claimed = numpy.ones(len(reference_keys), dtype=bool)
        claimed[references.to_numpy()] = False
        missing_rows = numpy.flatnonzero(claimed).tolist()
        if isinstance(reference, pa.Table):
            column = reference.column(self.key[0]).take(pa.array(missing_rows, pa.int64()))
            missing = [jsonable(v) for v in column.to_pylist()]
        else:
            missing = display_keys([reference[p] for p in missing_rows], self.key)
        absent: set[int] = set()
        mismatches = self._column_mismatches(found.take(pairs), pairs, reference, references, absent)
        return self._conclude(len(reference), found.num_rows, missing, unexpected, [], [], mismatches, absent)

    def _found_keys(self, found: pa.Table) -> pa.Array | None:
        """The found keys as text equal to the reference's ``canonical`` keys (``canonical`` leaves text that
        starts with a letter as it is; an int is ``("n", str(i))``): one column of integers or of such text,
        without nulls and without a key found twice; else None."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if len(self.key) != 1 or self.key[0] not in found.column_names:
            return None
        column = found.column(self.key[0]).combine_chunks()
        kind = column.type
        if pa.types.is_integer(kind):
            text = column.cast(pa.string())
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            if len(column) and not pc.all(pc.utf8_is_alpha(pc.utf8_slice_codeunits(column, 0, 1))).as_py():
                return None
            text = column.cast(pa.string())
        else:
            return None
        if column.null_count or _repeats(text):
            return None
        return text

    def _reference_keys(self, reference: list[Record] | pa.Table, numeric: bool) -> pa.Array | None:
        """The reference's keys in the found keys' form (``numeric``: integers as their digits), or None when
        a key has another form or repeats (the row path then decides which record stands for it)."""
        import pyarrow as pa

        if isinstance(reference, pa.Table):
            if self.key[0] not in reference.column_names:
                return None
            column = reference.column(self.key[0]).combine_chunks()
            if not numeric and _is_text(column.type) and not column.null_count:
                keys = column.cast(pa.string())  # text the found keys (letters first) can only equal as it is
            else:
                return self._reference_keys(reference.select([self.key[0]]).to_pylist(), numeric)
        else:
            canonical = keys_of(reference, self.key)
            texts = [k[1] if type(k) is tuple and k[0] == "n" else k for k in canonical] if numeric else canonical
            try:
                keys = pa.array(texts, type=pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return None  # a key that is neither text nor a number
        if keys.null_count or _repeats(keys):
            return None
        return keys

    def _column_mismatches(
        self,
        actual: pa.Table,
        rows: pa.Array,
        reference: list[Record] | pa.Table,
        references: pa.Array,
        absent: set[int],
    ) -> list[dict[str, Any]]:
        """``RecordsCheck._mismatches`` with both sides in columns: ``actual`` row i (found row ``rows[i]``) was
        paired with reference row ``references[i]``. Pairs certainly equal in Arrow are skipped; the rest are
        judged as the row path does, in its order (found row, then field)."""
        if not len(references):
            return []
        fields = self.spec.fields
        own_fields_only = fields is None
        if fields is None:
            fields = [f for f in self._reference_fields(reference, references) if f not in self.key]
        tolerance = self.spec.tolerance
        key_values = actual.column(self.key[0])
        entries: list[MismatchEntry] = []
        for position, field in enumerate(fields):
            wanted = _reference_column(reference, field, references)
            column = actual.column(field) if field in actual.column_names else None
            uncertain = _uncertain(wanted, column) if not isinstance(wanted, list) and column is not None else None
            if uncertain is None:
                wants = wanted if isinstance(wanted, list) else wanted.to_pylist()
                gots = column.to_pylist() if column is not None else [ABSENT] * len(wants)
                picked = range(len(wants))
            else:
                picked = uncertain.to_pylist()
                wants = wanted.take(uncertain).to_pylist()  # type: ignore[union-attr]
                gots = column.take(uncertain).to_pylist()  # type: ignore[union-attr]
            for j, want, value in judged(wants, gots, tolerance.get(field), own_fields_only):
                row = picked[j]
                key = jsonable(key_values[row].as_py())
                entries.append(mismatch_entry(row, position, key, field, want, value))
        return in_order(entries, absent)

    @staticmethod
    def _reference_fields(reference: list[Record] | pa.Table, references: pa.Array) -> list[str]:
        """The fields ``RecordsCheck`` compares when the spec names none: those of the paired reference
        records (the first one's when they all have the same, else all of them in order of appearance)."""
        import pyarrow as pa

        if isinstance(reference, pa.Table):
            return list(reference.column_names)
        shape = reference[references[0].as_py()].keys()
        if all(map(shape.__eq__, map(dict.keys, reference))):
            return list(shape)
        paired = [reference[p] for p in references.to_pylist()]
        if all(map(shape.__eq__, map(dict.keys, paired))):
            return list(shape)
        return list(dict.fromkeys(name for record in paired for name in record))


def _reference_column(reference: list[Record] | pa.Table, field: str, references: pa.Array) -> pa.Array | list[Any]:
    """A field of the paired reference records: an Arrow column when its values read back from Arrow as
    they are, else the Python values (``ABSENT`` where a record lacks the field)."""
    import pyarrow as pa

    if isinstance(reference, pa.Table):
        if field not in reference.column_names:
            return [ABSENT] * len(references)
        return reference.column(field).take(references)
    values = field_values(reference, field)
    types = set(map(type, values)) - {type(None)}
    if len(types) == 1 and next(iter(types)) in _ARROW_SAFE:
        try:
            return pa.array(values).take(references)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    return list(map(values.__getitem__, references.to_pylist()))


def _uncertain(wanted: pa.Array | pa.ChunkedArray, column: pa.ChunkedArray) -> pa.Array | None:
    """The positions where found ``column`` may differ from ``wanted`` in ``RecordsCheck``'s eyes, found in
    Arrow; None when these two types have no such test (every pair is then compared in Python). Equal here
    implies Python equality or ``same`` without tolerance, so a position left out is never a mismatch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    want, got = wanted.type, column.type
    reference: Any = wanted
    found: Any = column
    if (_is_text(want) and _is_text(got)) or (pa.types.is_boolean(want) and pa.types.is_boolean(got)):
        pass
    elif (pa.types.is_integer(want) or pa.types.is_floating(want)) and (
        pa.types.is_integer(got) or pa.types.is_floating(got) or pa.types.is_decimal(got)
    ):
        # both as plain decimal text (Arrow writes a float's shortest round-trip digits, as repr does): equal
        # text is the same number, as ``norm`` reads each; text in exponent form is left to Python
        reference, found = _plain(wanted.cast(pa.string())), _plain(column.cast(pa.string()))
    elif _is_text(want) and pa.types.is_timestamp(got) and got.tz is not None:
        iso = pc.match_substring_regex(wanted, _INSTANT)
        try:
            reference = pc.if_else(iso, wanted, pa.scalar(None, want)).cast(got)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        reference = pc.if_else(iso, reference, pa.scalar(None, got))
    elif pa.types.is_timestamp(want) and pa.types.is_timestamp(got) and (want.tz is None) == (got.tz is None):
        try:
            reference = wanted.cast(got)
        except pa.ArrowInvalid:  # nanoseconds the found unit cannot hold
            return None
    else:
        return None
    equal = pc.fill_null(pc.equal(found, reference), False)
    both_null = pc.and_(pc.is_null(column), pc.is_null(wanted))
    return pc.indices_nonzero(pc.invert(pc.or_(equal, both_null)))


def _repeats(keys: pa.Array) -> bool:
    """Whether a value occurs twice (polars counts distinct text five times faster than Arrow)."""
    import polars as pl

    return bool(pl.Series(keys).n_unique() != len(keys))


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _plain(numbers: Any) -> Any:
    """Decimal text without trailing zeros after the point (``25.50`` and ``25.5`` as ``25.5``)."""
    import pyarrow.compute as pc

    return pc.replace_substring_regex(numbers, r"\.0*$|(\.\d*?[1-9])0+$", r"\1")
