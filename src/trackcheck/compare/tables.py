"""A stage's rows held in an Arrow table, seen as the records the rest of trackcheck reads.

A large sql stage is read in columns (``sources.columnar``) and compared in columns (``compare.columnar``):
a dict per row is what made a million rows cost seconds and gigabytes (issue 13). What still wants records,
the snapshot's first ``snapshot_limit`` rows and the evidence, asks this view for them, and only those rows
become dicts; measuring lateness reads two fields of every row (``fields``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, overload

from trackcheck.compare.checks import Record

if TYPE_CHECKING:
    import pyarrow as pa


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
