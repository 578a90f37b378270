"""``compare`` over columns: found rows as an Arrow table, the same verdict and evidence as ``RecordsCheck``.

The row path turns every found row into a dict, then compares dicts. Here the found rows stay an Arrow table
(``sources.columnar``), and the reference is turned into Arrow columns where its values allow it (or given as
an Arrow table: a snapshot read in columns). Keys are paired in polars (merged when both sides are in
increasing order, else one hash join); each compared field is tested in Arrow for the pairs that are
*certainly* equal as ``RecordsCheck`` judges them (the same text; the same number, as doubles that can only
be equal for the same number, or else written as plain decimal text; the same instant, from ISO text
``values.as_instant`` reads too); only the pairs left go through ``RecordsCheck``'s own value rules, value
by value. So the evidence is ``RecordsCheck``'s, in its order and words, by construction.

``RecordsCheck`` itself evaluates (on the rows as dicts) what this path does not cover: a composite key, a
key column that is neither integers nor text starting with a letter, null keys, a key found more than once
(then which copy stands for the key and whether copies differ are decided row by row), a key the reference
holds twice or in another form (``"5"`` for ``5``). A field whose values Arrow cannot hold as one typed column
(mixed types, a field some reference records lack) is compared in Python, as the row path does.
"""

from __future__ import annotations

import sys
from operator import itemgetter
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
from trackcheck.compare.tables import arrow_column, is_text
from trackcheck.compare.values import jsonable

if TYPE_CHECKING:
    import numpy
    import polars as pl
    import pyarrow as pa

    from trackcheck.compare.checks import Record
    from trackcheck.compare.result import Comparison

#: ``values._INSTANT``, with at most microseconds: ISO text both Arrow and ``as_instant`` read the same way
_INSTANT = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$"
#: the most significant digits a decimal may have for its correctly rounded double to stand for it alone
#: (DBL_DIG: two decimals of at most 15 digits never round to the same double)
_DOUBLE_DIGITS = 15
#: the largest power of ten float64 holds exactly: a decimal's scale up to it divides exactly
_EXACT_POWER = 22
#: timestamp units whose whole range (years 1 to 9999) Arrow parses ISO text into without overflow, with the
#: most digits of a second's fraction Arrow reads into each (it refuses a finer text, even ``.000000``)
_FRACTION_DIGITS = {"s": 0, "ms": 3, "us": 6}


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

        found_keys = self._found_keys(found)
        numeric = pa.types.is_integer(found.schema.field(self.key[0]).type) if found_keys is not None else False
        reference_keys = None if found_keys is None else self._reference_keys(reference, numeric)
        pairs = None if found_keys is None or reference_keys is None else _pair(found_keys, reference_keys)
        if pairs is None:
            records = reference.to_pylist() if isinstance(reference, pa.Table) else reference
            return self.evaluate(found.to_pylist(), records)
        rows, references = pairs
        key_column = found.column(self.key[0])
        unexpected_rows = numpy.flatnonzero(_unclaimed(rows, found.num_rows))
        unexpected = [jsonable(v) for v in key_column.take(unexpected_rows).to_pylist()]
        missing_rows = numpy.flatnonzero(_unclaimed(references, len(reference_keys)))  # type: ignore[arg-type]
        if isinstance(reference, pa.Table):
            column = reference.column(self.key[0]).take(missing_rows)
            missing = [jsonable(v) for v in column.to_pylist()]
        else:
            missing = display_keys([reference[p] for p in missing_rows.tolist()], self.key)
        absent: set[int] = set()
        mismatches = self._column_mismatches(found, rows, reference, references, absent)
        return self._conclude(len(reference), found.num_rows, missing, unexpected, [], [], mismatches, absent)

    def _found_keys(self, found: pa.Table) -> pa.Array | None:
        """The found keys as text equal to the reference's ``canonical`` keys (``canonical`` leaves text that
        starts with a letter as it is; an int is ``("n", str(i))``): one column of integers or of such text,
        without nulls; else None. (Whether one repeats, ``_pair`` finds.)"""
        import pyarrow as pa

        if len(self.key) != 1 or self.key[0] not in found.column_names:
            return None
        column = found.column(self.key[0]).combine_chunks()
        kind = column.type
        if pa.types.is_integer(kind):
            text = column.cast(pa.string())
        elif is_text(kind):
            if not _letters_first(column):
                return None
            text = column.cast(pa.string())
        else:
            return None
        return None if column.null_count else text

    def _reference_keys(self, reference: list[Record] | pa.Table, numeric: bool) -> pa.Array | None:
        """The reference's keys in the found keys' form (``numeric``: integers as their digits), or None when
        a key has another form or is null (the row path then decides which record stands for it)."""
        import pyarrow as pa

        if isinstance(reference, pa.Table):
            if self.key[0] not in reference.column_names:
                return None
            column = reference.column(self.key[0]).combine_chunks()
            if not numeric and is_text(column.type) and not column.null_count:
                return column.cast(pa.string())  # text the found keys (letters first) can only equal as it is
            return self._reference_keys(reference.select([self.key[0]]).to_pylist(), numeric)
        if not numeric:
            texts = _letter_first_texts(reference, self.key[0])
            if texts is not None:
                return texts
        canonical = keys_of(reference, self.key)
        texts = [k[1] if type(k) is tuple and k[0] == "n" else k for k in canonical] if numeric else canonical
        try:
            keys = pa.array(texts, type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None  # a key that is neither text nor a number
        return None if keys.null_count else keys

    def _column_mismatches(
        self,
        found: pa.Table,
        rows: numpy.ndarray,
        reference: list[Record] | pa.Table,
        references: numpy.ndarray,
        absent: set[int],
    ) -> list[dict[str, Any]]:
        """``RecordsCheck._mismatches`` with both sides in columns: pair i is found row ``rows[i]`` with
        reference row ``references[i]`` (found rows in increasing order). Pairs certainly equal in Arrow are
        skipped; the rest are judged as the row path does, in its order (pair, then field)."""
        import pyarrow as pa

        if not len(references):
            return []
        fields = self.spec.fields
        own_fields_only = fields is None
        extracted: dict[str, list[Any]] = {}  # reference fields read while choosing them, for _reference_column
        if fields is None:
            fields = [f for f in self._reference_fields(reference, references, extracted) if f not in self.key]
        tolerance = self.spec.tolerance
        # the found rows paired, in order: the found columns as they are when every row is, else filtered
        paired = None if len(rows) == found.num_rows else pa.array(~_unclaimed(rows, found.num_rows))
        key_column = found.column(self.key[0])
        entries: list[MismatchEntry] = []
        for position, field in enumerate(fields):
            wanted = _reference_column(reference, field, references, extracted.pop(field, None))
            column = None
            if field in found.column_names:
                column = found.column(field) if paired is None else found.column(field).filter(paired)
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
                pair = picked[j]
                key = jsonable(key_column[int(rows[pair])].as_py())
                entries.append(mismatch_entry(pair, position, key, field, want, value))
        return in_order(entries, absent)

    def _reference_fields(
        self, reference: list[Record] | pa.Table, references: numpy.ndarray, extracted: dict[str, list[Any]]
    ) -> list[str]:
        """The fields ``RecordsCheck`` compares when the spec names none: those of the paired reference
        records (the first one's when they all have the same, else all of them in order of appearance).

        Whether every record has the first one's fields is told by their counts of fields and by reading
        each of these fields from every record (into ``extracted``, which the comparison needs anyway; the
        key is in every record, or the row path would have it): a comparison of key sets per record took
        longer than the rest of a field's work."""
        import pyarrow as pa

        if isinstance(reference, pa.Table):
            return list(reference.column_names)
        shape = reference[int(references[0])].keys()
        if len(set(map(len, reference))) == 1:
            try:
                for name in shape:
                    if name not in self.key:
                        extracted[name] = list(map(itemgetter(name), reference))
                return list(shape)
            except KeyError:  # one record has another field instead
                extracted.clear()
        paired = [reference[p] for p in references.tolist()]
        if all(map(shape.__eq__, map(dict.keys, paired))):
            return list(shape)
        return list(dict.fromkeys(name for record in paired for name in record))


def _pair(found_keys: pa.Array, reference_keys: pa.Array) -> tuple[numpy.ndarray, numpy.ndarray] | None:
    """(found rows, their reference rows), by increasing found row; None when a key repeats on either side,
    paired or not (then the row path decides which record stands for it). Keys in increasing order on both
    sides (ids that grow, read in insertion order: the common case) are merged by binary search, in half the
    time of a hash join; others are paired by one hash join in polars (zero-copy from Arrow, faster than
    Arrow's ``index_in``), whose ``validate`` checks every key for repeats."""
    import numpy
    import polars as pl

    found_side, reference_side = pl.Series(found_keys), pl.Series(reference_keys)
    if _increasing(found_side) and _increasing(reference_side):  # strictly: no key repeats
        if not len(reference_side):
            return numpy.zeros(0, dtype=numpy.int64), numpy.zeros(0, dtype=numpy.int64)
        at = reference_side.search_sorted(found_side, side="left").to_numpy().astype(numpy.int64)
        candidates = reference_side.gather(numpy.minimum(at, len(reference_side) - 1))
        rows = numpy.flatnonzero((candidates == found_side).to_numpy())
        return rows, at[rows]
    left = pl.DataFrame({"key": found_side}).with_row_index("found")
    right = pl.DataFrame({"key": reference_side}).with_row_index("reference")
    try:
        joined = left.join(right, on="key", how="inner", validate="1:1")
    except pl.exceptions.ComputeError:  # "join keys did not fulfill 1:1 validation"
        return None
    rows = joined["found"].to_numpy().astype(numpy.int64)
    references = joined["reference"].to_numpy().astype(numpy.int64)
    if len(rows) > 1 and not bool((rows[1:] > rows[:-1]).all()):  # the join does not promise the found order
        order = numpy.argsort(rows)
        rows, references = rows[order], references[order]
    return rows, references


def _increasing(keys: pl.Series) -> bool:
    """Whether each key is greater than the one before (in polars' order, the one ``search_sorted`` uses)."""
    return len(keys) < 2 or bool((keys.slice(1) > keys.slice(0, len(keys) - 1)).all())


def _unclaimed(positions: numpy.ndarray, size: int) -> numpy.ndarray:
    """Which of ``size`` rows are not among ``positions``."""
    import numpy

    mask = numpy.ones(size, dtype=bool)
    mask[positions] = False
    return mask


def _at(values: pa.ChunkedArray | pa.Array, positions: numpy.ndarray) -> pa.ChunkedArray | pa.Array:
    """``values.take(positions)``, without a copy when the positions are its first rows in order (a reference
    read in the found order: the common case)."""
    import numpy

    count = len(positions)
    first_rows = count == 0 or (positions[-1] == count - 1 and numpy.array_equal(positions, numpy.arange(count)))
    return values.slice(0, count) if first_rows else values.take(positions)


def _reference_column(
    reference: list[Record] | pa.Table, field: str, references: numpy.ndarray, extracted: list[Any] | None
) -> pa.Array | pa.ChunkedArray | list[Any]:
    """A field of the paired reference records (``extracted``: its values in every record, if read already):
    an Arrow column when its values read back from Arrow as they are, else the Python values (``ABSENT``
    where a record lacks the field)."""
    import pyarrow as pa

    if isinstance(reference, pa.Table):
        if field not in reference.column_names:
            return [ABSENT] * len(references)
        return _at(reference.column(field), references)
    values = field_values(reference, field) if extracted is None else extracted
    column = arrow_column(values)  # ABSENT among them: Arrow refuses it
    if not isinstance(column, str):
        return _at(column, references)
    return list(map(values.__getitem__, references.tolist()))


def _uncertain(wanted: pa.Array | pa.ChunkedArray, column: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """The positions where found ``column`` may differ from ``wanted`` in ``RecordsCheck``'s eyes, found in
    Arrow; None when these two types have no such test (every pair is then compared in Python). Equal here
    implies Python equality or ``same`` without tolerance, so a position left out is never a mismatch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    want, got = wanted.type, column.type
    reference: Any = wanted
    found: Any = column
    if (is_text(want) and is_text(got)) or (pa.types.is_boolean(want) and pa.types.is_boolean(got)):
        pass
    elif want == got and (pa.types.is_decimal(want) or pa.types.is_date(want)):
        pass  # one decimal or date type on both sides (a snapshot kept in columns): equal values, equal meaning
    elif (pa.types.is_signed_integer(want) and pa.types.is_signed_integer(got)) or (
        pa.types.is_unsigned_integer(want) and pa.types.is_unsigned_integer(got)
    ):
        pass  # integers of one signedness: Arrow compares them exactly, as Python does
    elif (pa.types.is_integer(want) or pa.types.is_floating(want)) and (
        pa.types.is_integer(got) or pa.types.is_floating(got) or pa.types.is_decimal(got)
    ):
        reference, found = _doubles(wanted), _doubles(column)
        if reference is None or found is None:
            # both as plain decimal text (Arrow writes a float's shortest round-trip digits, as repr does):
            # equal text is the same number, as ``norm`` reads each; text in exponent form is left to Python
            reference, found = _plain(wanted.cast(pa.string())), _plain(column.cast(pa.string()))
    elif is_text(want) and pa.types.is_timestamp(got) and got.tz is not None and got.unit in _FRACTION_DIGITS:
        reference = _instants(_single(wanted), got)
        if reference is None:
            return None
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


def _doubles(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray | None:
    """Numbers as float64 values that are equal only for the same number as ``norm`` reads them, or None
    when they have no such form. Floats as they are (Python compares floats so); integers float64 holds
    exactly (the cast raises for others); decimals of at most 15 digits as their correctly rounded double:
    two such decimals never round to the same double, so a float equal to it has that decimal as its
    shortest text (``repr``, which ``norm`` reads), and an integer equal to it is that decimal."""
    import pyarrow as pa

    kind = values.type
    if pa.types.is_floating(kind):
        return values.cast(pa.float64())
    if pa.types.is_integer(kind):
        try:
            return values.cast(pa.float64())
        except pa.ArrowInvalid:  # beyond 2**53: not exact
            return None
    if pa.types.is_decimal128(kind) and kind.precision <= _DOUBLE_DIGITS and 0 <= kind.scale <= _EXACT_POWER:
        return _rounded(_single(values), kind.scale)
    return None


def _rounded(decimals: pa.Array, scale: int) -> pa.Array | None:
    """The correctly rounded doubles of decimal128 values of at most 15 digits: their unscaled integers (the
    low 64 bits of each, little-endian, hold them whole) over 10**scale, both exact in float64, so IEEE
    division rounds the quotient once. (Arrow's own cast does not promise correct rounding.)"""
    import numpy
    import pyarrow as pa

    if sys.byteorder != "little":
        return None
    words = numpy.frombuffer(decimals.buffers()[1], dtype=numpy.int64)
    unscaled = words[2 * decimals.offset : 2 * (decimals.offset + len(decimals)) : 2]
    doubles = unscaled.astype(numpy.float64) / 10.0**scale
    mask = decimals.is_null().to_numpy(zero_copy_only=False) if decimals.null_count else None
    return pa.array(doubles, type=pa.float64(), mask=mask)


def _instants(texts: pa.Array, kind: pa.TimestampType) -> pa.Array | None:
    """ISO texts as instants of ``kind`` where both Arrow and ``as_instant`` read them, and read them the
    same: null where the text is not in the shape ``_iso_shaped`` tests. None when Arrow rejects a text of
    that shape (a letter for a digit, 30 February) even once the full pattern narrows them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    shaped = _iso_shaped(texts, _FRACTION_DIGITS[kind.unit])
    if texts.null_count:
        shaped &= texts.is_valid().to_numpy(zero_copy_only=False)
    try:
        return _valid_where(texts, shaped).cast(kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    matching = pc.fill_null(pc.match_substring_regex(texts, _INSTANT), False).to_numpy(zero_copy_only=False)
    try:
        return _valid_where(texts, shaped & matching).cast(kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _valid_where(texts: pa.Array, valid: numpy.ndarray) -> pa.Array:
    """The texts, null where not ``valid``: their own buffers under another validity bitmap (no copy of the
    text, and Arrow's cast parses valid slots only). Not ``pc.if_else``: on a sliced text array (a reference
    table's slice) pyarrow 22 returns other slots' bytes."""
    import numpy
    import pyarrow as pa

    # the bitmap covers the buffers from their start: a sliced array's first slot is bit ``texts.offset``
    bits = numpy.packbits(numpy.concatenate([numpy.zeros(texts.offset, dtype=bool), valid]), bitorder="little")
    _, offsets, data = texts.buffers()
    return pa.Array.from_buffers(texts.type, len(texts), [pa.py_buffer(bits), offsets, data], offset=texts.offset)


def _iso_shaped(texts: pa.Array, digits: int) -> numpy.ndarray:
    """Which texts have the bytes of ``YYYY-MM-DD[T ]hh:mm:ss`` + an optional fraction of 1 to ``digits`` +
    ``Z`` or ``±hh:mm``, with a year from 1000, tested on their separators and lengths (ten vectorized
    byte lookups, where a regular expression per text cost more than the rest of the field). Arrow parses
    only ASCII digits where digits go and rejects out-of-range fields as Python does; in this shape both
    read the same instant. Shapes they read differently are left out: a date alone, no seconds, no zone
    (Arrow refuses it, ``as_instant`` takes UTC), ``+hh`` or ``+hhmm``, year 0, a point without digits."""
    import numpy
    import pyarrow as pa

    _, offsets_buffer, data_buffer = texts.buffers()
    if data_buffer is None or not data_buffer.size:
        return numpy.zeros(len(texts), dtype=bool)
    offsets_type = numpy.int64 if pa.types.is_large_string(texts.type) else numpy.int32
    offsets = numpy.frombuffer(offsets_buffer, dtype=offsets_type)[texts.offset : texts.offset + len(texts) + 1]
    data = numpy.frombuffer(data_buffer, dtype=numpy.uint8)
    start, end = offsets[:-1].astype(numpy.int64), offsets[1:].astype(numpy.int64)

    def byte(positions: numpy.ndarray) -> numpy.ndarray:
        return data.take(positions, mode="clip")  # beyond a text only where its length rules it out

    zulu = byte(end - 1) == ord("Z")
    fraction = end - start - numpy.where(zulu, 1, 6) - 19  # the point and its digits, between seconds and zone
    shaped = (fraction == 0) | ((fraction >= 2) & (fraction <= digits + 1))
    shaped &= byte(start) != ord("0")
    for position, separator in ((4, "-"), (7, "-"), (13, ":"), (16, ":")):
        shaped &= byte(start + position) == ord(separator)
    middle = byte(start + 10)
    shaped &= (middle == ord("T")) | (middle == ord(" "))
    shaped &= (fraction == 0) | (byte(start + 19) == ord("."))
    sign = byte(end - 6)
    shaped &= zulu | (((sign == ord("+")) | (sign == ord("-"))) & (byte(end - 3) == ord(":")))
    return shaped


def _single(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (a copy only when there are several chunks)."""
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values


def _letter_first_texts(records: list[Record], field: str) -> pa.Array | None:
    """The field of every record as one text column when each is text starting with a letter (``canonical``
    leaves those as they are), without nulls; else None. A third of ``keys_of``'s cost: no Python pass
    over the values' first letters."""
    import pyarrow as pa

    try:
        texts = pa.array(list(map(itemgetter(field), records)))
    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        return None
    if not is_text(texts.type) or texts.null_count or not _letters_first(texts):
        return None
    return texts.cast(pa.string())


def _letters_first(texts: pa.Array) -> bool:
    """Whether every text starts with a letter (so is no number nor instant to ``canonical``)."""
    import pyarrow.compute as pc

    return not len(texts) or bool(pc.all(pc.utf8_is_alpha(pc.utf8_slice_codeunits(texts, 0, 1))).as_py())


def _plain(numbers: Any) -> Any:
    """Decimal text without trailing zeros after the point (``25.50`` and ``25.5`` as ``25.5``)."""
    import pyarrow.compute as pc

    return pc.replace_substring_regex(numbers, r"\.0*$|(\.\d*?[1-9])0+$", r"\1")
