"""A stage's rows held in an Arrow table, seen as the records the rest of trackcheck reads.

A large sql stage is read in columns (``sources.columnar``) and compared in columns (``compare.columnar``):
a dict per row is what made a million rows cost seconds and gigabytes (issue 13). What still wants records,
the snapshot's first ``snapshot_limit`` rows and the evidence, asks this view for them, and only those rows
become dicts; measuring lateness reads two fields of every row (``fields``).

A later stage compares with such a stage's rows by rows, so when they are more than the records a snapshot
keeps, the snapshot keeps them all in columns too: Arrow IPC bytes, compressed (``table_bytes``), read back
as a table (``table_of``) whose typed columns the columnar comparison reads as they are. Records of any other
source are kept so when Arrow holds them as they are (``records_table``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from trackcheck.compare.checks import Record
from trackcheck.compare.values import jsonable

if TYPE_CHECKING:
    import pyarrow as pa

#: Python types a column of records may hold (one of them, and None) to become an Arrow column whose values
#: read back as they were: mixing ints and floats would read 1 back as 1.0, datetimes would lose their zone
ARROW_SAFE = (str, int, float, bool)
#: the codec of a snapshot kept in columns: a million rows of six fields (62 MB in Arrow) take 17 MB, written
#: in 0.11 s and read back in 0.06 s (lz4: 28 MB, as fast)
CODEC = "zstd"


class TableRecords(Sequence[Record]):
    """The rows of ``table`` as a read-only sequence of records, each made when it is read."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return int(self.table.num_rows)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        rows = self.table.num_rows
        if isinstance(index, slice):
            start, stop, step = index.indices(rows)
            if step != 1:
                return self.table.to_pylist()[index]
            return self.table.slice(start, max(0, stop - start)).to_pylist()
        position = index + rows if index < 0 else index
        if not 0 <= position < rows:
            raise IndexError(index)
        return self.table.slice(position, 1).to_pylist()[0]

    def fields(self, names: Sequence[str]) -> list[Record]:
        """Every row as a record of these fields only (those of them the table has): what measuring lateness
        reads of each row, its key and its sent time, without the rest of its fields."""
        present = [name for name in dict.fromkeys(names) if name in self.table.column_names]
        return self.table.select(present).to_pylist()

    def __iter__(self) -> Iterator[Record]:
        for batch in self.table.to_batches(max_chunksize=4096):
            yield from batch.to_pylist()

    def __repr__(self) -> str:
        return f"TableRecords({self.table.num_rows} rows: {', '.join(self.table.column_names)})"


def table_bytes(table: pa.Table) -> bytes:
    """``table`` as the bytes of one Arrow IPC stream, its buffers compressed (``CODEC``)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=CODEC)) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def table_of(data: bytes) -> pa.Table:
    """The table ``table_bytes`` wrote."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def reference_records(reference: list[Record] | pa.Table) -> list[Record]:
    """A reference as the records the row path compares with: a table's rows as the JSON values a snapshot of
    records would hold (``jsonable``), so that a stage read as records judges a snapshot kept in columns as it
    judges one kept as records."""
    if isinstance(reference, list):
        return reference
    return [jsonable(record) for record in reference.to_pylist()]


def is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def arrow_column(values: list[Any]) -> pa.Array | str:
    """``values`` as one Arrow array whose values read back as they are, or why Arrow would change them (the
    problem, to follow a field's name). Text and nulls read back as they were (Arrow refuses to mix text with
    anything else); other values when they are of one of ``ARROW_SAFE``'s types: Arrow would read ints mixed
    with floats back as floats, and a Decimal or a datetime back in another form."""
    import pyarrow as pa

    try:
        column = pa.array(values)  # Arrow infers one type from them all, or raises
    except OverflowError:
        return "holds an integer beyond 64 bits"
    except UnicodeEncodeError:  # text with a lone surrogate, which UTF-8 cannot hold
        return "holds a value Arrow cannot hold"
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return "holds values of several types, or nested ones"
    if is_text(column.type) or pa.types.is_null(column.type):
        return column
    types = set(map(type, values)) - {type(None)}
    if len(types) == 1 and next(iter(types)) in ARROW_SAFE:
        return column
    return "holds values of several types, or nested ones"


def records_table(records: Sequence[Record]) -> pa.Table | str:
    """``records`` (JSON values: a snapshot's) as a table whose rows read back as the same records, or why
    Arrow would change them: records of other fields (a field one lacks is not a null), a field of mixed
    types or of nested values, an integer beyond 64 bits, text that is not valid UTF-8."""
    import pyarrow as pa

    if not records:
        return "no records"
    shape = records[0].keys()
    if any(record.keys() != shape for record in records):
        return "the records do not all have the same fields"
    columns = {}
    for name in shape:
        column = arrow_column([record[name] for record in records])
        if isinstance(column, str):
            return f"field {name!r} {column}"
        columns[name] = column
    return pa.table(columns)
