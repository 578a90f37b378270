"""Reconcile two SQL tables by checksums: compare segments inside each database, fetch rows only where they differ.

Both tables are cut into the same segments: by key range when the key is one integer column (each segment
query then reads an index range), by a time field when asked (``bucket_by``: ranges of the column, which its
index or partitions serve), or else by a hash of the key. A segment's checksum is its row count and the
sum of its rows' 64-bit hashes modulo 2**64 (see ``dialects``), computed by each database with ``GROUP BY``: one
query per side and level returns the checksums of every segment of that level, in segment order, and the two
streams are merged as they arrive, so memory holds one chunk of each, whatever the table's size.

The first level has at most ``MAX_SEGMENTS`` segments; each next level splits the segments that differed into
``FACTOR`` parts, down to segments of about ``LEAF_ROWS`` rows. Of the finest segments that differ, each side
returns one line per row (its key and hash); rows whose hashes differ are then read in full, by key, and compared
field by field: the values both sides rendered (the text ``dialects`` hashes) decide, unless the field has a
tolerance, which the values themselves are then held to. The work grows with the table once (the first level) and
with the differences after that: 3,000 differences in 10 M rows read about 156,000 segments' checksums and
200,000 rows' hashes, not 10 M rows.

Both sides run at the same time (a thread each): they are different servers.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.sql.elements import BindParameter, TextClause

from trackcheck.compare.values import equal, jsonable
from trackcheck.errors import PlanError
from trackcheck.plan.model import IDENTIFIER
from trackcheck.recon.columns import Column, Form, common_form
from trackcheck.recon.dialects import Dialect, dialect_for
from trackcheck.recon.result import Reconciliation, Side
from trackcheck.sources.sql import SqlSource, bound_filters, dataset_sql, normalize_url

#: rows a finest segment holds on average: its rows' hashes are what a difference in it costs to read
LEAF_ROWS = 64
#: parts a differing segment is split into at the next level
FACTOR = 256
#: segments of the first level: checksums streamed, so this bounds the work of a level, not memory
MAX_SEGMENTS = 1 << 20
#: segments one drill-down query narrows to; keys one row query asks for
BATCH = 500
#: rows a stream hands over at once
CHUNK = 2_000
MODULUS = 1 << 64
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Table:
    """One side: a ``table`` of a SQL source, or a read-only ``query`` of it (a plan's, checked when the plan
    loaded), narrowed by ``filters`` (field → accepted values, always bound: a run's ``where``) and by ``where``
    (a SQL condition: the operator's, from the command line, never a plan's)."""

    source: SqlSource
    table: str | None = None
    where: str | None = None
    query: str | None = None
    filters: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """How results name it: the table, or ``query``."""
        return self.table or "query"


@dataclass(frozen=True)
class ReconSpec:
    """What to compare: the key, the fields (None: every column both tables have, but the key), per field the
    digits to compare to (scale of numbers, fractional seconds of instants) and tolerances, how many
    differences of each kind to list, and the time field to cut the tables by, if not the key."""

    key: list[str]
    fields: list[str] | None = None
    digits: dict[str, int] = field(default_factory=dict)
    tolerance: dict[str, float | timedelta] = field(default_factory=dict)
    limit: int = 100
    #: cut the tables by this time field, in segments of ``bucket_seconds`` (aligned on 1970-01-01 UTC)
    bucket_by: str | None = None
    bucket_seconds: int = 3600


@dataclass
class _Prepared:
    """One side, ready: its dialect, the table as SQL, its columns and the SQL of the values it hashes."""

    table: Table
    dialect: Dialect
    dataset: str
    columns: dict[str, Column]
    filters: list[str] = field(default_factory=list)
    binds: list[BindParameter[Any]] = field(default_factory=list)
    quoted: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    queries: int = 0
    rows_read: int = 0

    @property
    def source(self) -> SqlSource:
        return self.table.source

    def condition(self, extra: str | None = None) -> str:
        """`` WHERE`` the table's own conditions and ``extra``, or nothing."""
        parts = [f"({self.table.where})".replace(":", "\\:")] if self.table.where else []
        parts += self.filters
        if extra:
            parts.append(f"({extra})")
        return f" WHERE {' AND '.join(parts)}" if parts else ""

    def statement(self, sql: str) -> TextClause:
        """``sql`` with the filters' bound values, or fenced by the dialect when it binds nothing."""
        if self.binds:
            return text(sql).bindparams(*self.binds)
        return self.dialect.fenced(sql)


@dataclass
class _Partition:
    """How rows fall into segments: ``(position - low) DIV width``, the position an integer key (``key``) or a
    time field's seconds since 1970 (``time``), or ``hash(key) MOD modulus`` (``hash``)."""

    kind: Literal["key", "time", "hash"]
    low: int = 0
    sizes: list[int] = field(default_factory=list)  # width (key, time) or modulus (hash) of each level


def reconcile(left: Table, right: Table, spec: ReconSpec, progress: Progress | None = None) -> Reconciliation:
    """The differences between ``left`` (the reference) and ``right``. PlanError names what cannot be compared
    (a key or field one table lacks, an engine without checksum SQL); SourceError, a table that cannot be read."""
    return _Reconciler(left, right, spec, progress or _quiet).run()


def _quiet(_what: str, _done: int, _total: int) -> None:
    return None


class _Reconciler:
    """One reconciliation: both sides prepared, then the levels of segments, the leaves, and the result."""

    def __init__(self, left: Table, right: Table, spec: ReconSpec, progress: Progress) -> None:
        self.spec = spec
        self.progress = progress
        self.sides = (self._side(left, "left"), self._side(right, "right"))
        self.started = time.monotonic()
        self.segments = 0
        self.levels = 0
        self.missing: list[Any] = []
        self.unexpected: list[Any] = []
        self.duplicates: list[Any] = []
        self.mismatches: list[dict[str, Any]] = []
        self.counts = {"missing": 0, "unexpected": 0, "changed": 0, "duplicates": 0}
        self.unlike_duplicates = 0

    # -- setting up --------------------------------------------------------------------------------------
    def _side(self, table: Table, which: str) -> _Prepared:
        backend = normalize_url(table.source.options.url).get_backend_name()
        dialect = dialect_for(backend)
        if dialect is None:
            raise PlanError(
                f"no checksum SQL for {backend}: reconcile PostgreSQL, MariaDB/MySQL, SQLite or DuckDB tables",
                table=table.table,
            )
        if table.table is not None:
            parts = table.table.split(".")
            if not 1 <= len(parts) <= 3 or not all(IDENTIFIER.match(part) for part in parts):
                raise PlanError(f"{which} table: write table or schema.table (letters, digits and _)", table=table.name)
        engine_dialect = table.source.engine.dialect
        dataset = dataset_sql(engine_dialect.identifier_preparer, table.table, table.query)
        if dataset is None:
            raise PlanError(f"the {which} side needs a table or a query")
        if table.where is not None:
            from trackcheck.sources.sqlguard import check_query  # sqlglot: ~8 MB, for a --where only

            refusal = check_query(f"SELECT * FROM {dataset} WHERE {table.where}", backend)
            if refusal is not None:
                raise PlanError(f"{which} --where: {refusal}", table=table.name)
        filters, binds = bound_filters(engine_dialect, table.filters, "tc_t", None, table.source)
        with table.source.session() as connection, dialect.prepared(connection):
            try:
                columns = dialect.columns(connection, dataset, table.table)
            except NoSuchTableError:
                raise PlanError(
                    f"the {which} table does not exist, or this user cannot see it", table=table.name
                ) from None
        if not columns:
            raise PlanError(f"the {which} table has no columns, or does not exist", table=table.name)
        return _Prepared(table, dialect, dataset, columns, filters, binds)

    def _forms(self) -> dict[str, Form]:
        left, right = self.sides
        spec = self.spec
        names = spec.fields
        if names is None:
            names = [name for name in left.columns if name in right.columns and name not in spec.key]
        forms: dict[str, Form] = {}
        for name in [*spec.key, *names]:
            for side, which in ((left, "left"), (right, "right")):
                if name not in side.columns:
                    known = ", ".join(side.columns)
                    raise PlanError(f"the {which} table has no column {name!r} (it has {known})", field=name)
            forms[name] = common_form(left.columns[name], right.columns[name], spec.digits.get(name))
        bucket = spec.bucket_by
        for side, which in ((left, "left"), (right, "right")):
            preparer = side.source.engine.dialect.identifier_preparer
            for name, form in forms.items():
                side.quoted[name] = f"tc_t.{preparer.quote(name)}"
                side.texts[name] = side.dialect.text_of(side.quoted[name], side.columns[name], form)
            if bucket is not None:
                column = side.columns.get(bucket)
                if column is None or column.kind not in ("timestamp", "timestamptz", "date"):
                    said = "has no such column" if column is None else f"holds {column.kind}"
                    raise PlanError(
                        f"bucket.by: the {which} table {said}: name a timestamp or date column", field=bucket
                    )
                side.quoted[bucket] = f"tc_t.{preparer.quote(bucket)}"
        return forms

    # -- SQL ---------------------------------------------------------------------------------------------
    def _key_text(self, side: _Prepared) -> str:
        return side.dialect.joined([side.texts[k] for k in self.spec.key])

    def _row_hash(self, side: _Prepared) -> str:
        """The row's 64-bit hash: of its key and its fields, in that order."""
        return side.dialect.hash64(side.dialect.md5(side.dialect.joined(list(side.texts.values()))))

    def _position(self, side: _Prepared, partition: _Partition) -> str:
        """What segments are cut on: the integer key itself, the time field's seconds (NULL as the first
        segment's), or a 32-bit hash of the key's text."""
        if partition.kind == "key":
            return side.quoted[self.spec.key[0]]
        if partition.kind == "time":
            return f"COALESCE({self._seconds(side)}, {partition.low})"
        return side.dialect.hex32(side.dialect.md5(self._key_text(side)), 1)

    def _seconds(self, side: _Prepared) -> str:
        name = self.spec.bucket_by or ""
        return side.dialect.epoch_seconds(side.quoted[name], side.columns[name])

    def _segment(self, side: _Prepared, partition: _Partition, level: int) -> str:
        position, size = self._position(side, partition), partition.sizes[level]
        if partition.kind == "hash":
            return f"(({position}) % {size})"
        return f"(({position}) - {partition.low}) {side.dialect.divide} {size}"

    def _within(self, side: _Prepared, partition: _Partition, level: int, segments: list[int]) -> str:
        """SQL keeping the rows of ``segments`` of ``level``: key or time ranges (an index serves them), or hash
        residues."""
        size = partition.sizes[level]
        if partition.kind == "hash":
            return f"(({self._position(side, partition)}) % {size}) IN ({', '.join(map(str, segments))})"
        ranges: list[list[int]] = []
        for segment in segments:  # sorted: adjacent segments make one range
            start = partition.low + segment * size
            if ranges and ranges[-1][1] == start:
                ranges[-1][1] = start + size
            else:
                ranges.append([start, start + size])
        if partition.kind == "key":
            key = side.quoted[self.spec.key[0]]
            return " OR ".join(f"({key} >= {a} AND {key} < {b})" for a, b in ranges)
        name = self.spec.bucket_by or ""
        column, raw = side.columns[name], side.quoted[name]
        kept = []
        for a, b in ranges:
            lower, upper = side.dialect.instant(a, column), side.dialect.instant(b, column)
            if lower is None or upper is None:  # no literal instants in this engine: its seconds, without an index
                kept.append(f"({self._seconds(side)} >= {a} AND {self._seconds(side)} < {b})")
            else:
                kept.append(f"({raw} >= {lower} AND {raw} < {upper})")
            if a <= partition.low < b:  # rows without a time are in the first segment
                kept.append(f"({raw} IS NULL)")
        return " OR ".join(kept)

    # -- running -----------------------------------------------------------------------------------------
    def run(self) -> Reconciliation:
        forms = self._forms()
        rows = self._both(self._size)
        partition = self._partition(rows)
        total = max(count for count, _, _ in rows)
        differing: list[int] | None = None  # None: every segment (the first level)
        for level in range(len(partition.sizes)):
            self.levels += 1
            differing = self._level(partition, level, differing, total)
            if not differing:
                break
        if differing:
            self._leaves(partition, differing)
        return self._result(forms, [count for count, _, _ in rows])

    def _size(self, side: _Prepared) -> tuple[int, int | None, int | None]:
        """Rows, and the lowest and highest position when segments are ranges (of the key, or of time)."""
        kind = self._kind()
        extremes = ""
        if kind != "hash":
            position = side.quoted[self.spec.key[0]] if kind == "key" else self._seconds(side)
            extremes = f", MIN({position}), MAX({position})"
        [row] = list(self._rows(side, f"SELECT COUNT(*){extremes} FROM {side.dataset} AS tc_t{side.condition()}"))
        return (int(row[0]), row[1], row[2]) if kind != "hash" else (int(row[0]), None, None)

    def _kind(self) -> Literal["key", "time", "hash"]:
        """By time when asked; by key range when the key is one column of an integer type on both sides; else by
        the key's hash."""
        if self.spec.bucket_by is not None:
            return "time"
        if len(self.spec.key) != 1:
            return "hash"
        name = self.spec.key[0]
        ranged = all(side.columns[name].kind == "integer" and side.columns[name].digits is None for side in self.sides)
        return "key" if ranged else "hash"

    def _partition(self, sizes: tuple[tuple[int, Any, Any], ...]) -> _Partition:
        rows = max(1, max(count for count, _, _ in sizes))
        kind = self._kind()
        if kind == "hash":
            finest = 1 << max(0, min(32, math.ceil(math.log2(max(1, rows / LEAF_ROWS)))))
            moduli = [finest]
            while moduli[0] > MAX_SEGMENTS:
                moduli.insert(0, max(MAX_SEGMENTS, moduli[0] // FACTOR))
            return _Partition("hash", sizes=moduli)
        lows = [int(low) for _, low, _ in sizes if low is not None]
        highs = [int(high) for _, _, high in sizes if high is not None]
        if not lows:
            return _Partition(kind, sizes=[1])
        low, high = min(lows), max(highs)
        if kind == "key":
            span = high - low + 1
            widths = [max(1, span * LEAF_ROWS // rows)]
        else:  # whole buckets from 1970 (hours of UTC, days...), split further while they hold many rows
            step = self.spec.bucket_seconds
            low = low // step * step
            span = high - low + 1
            widths = [step]
            while widths[-1] > 1 and rows * widths[-1] / span > LEAF_ROWS:
                widths.append(_finer(widths[-1]))
        while math.ceil(span / widths[0]) > MAX_SEGMENTS:
            widths.insert(0, widths[0] * FACTOR)
        return _Partition(kind, low, widths)

    def _level(self, partition: _Partition, level: int, parents: list[int] | None, total: int) -> list[int]:
        """The segments of ``level`` (within ``parents`` of the level above) whose checksums differ."""
        differing: list[int] = []
        done = 0
        batches = [None] if parents is None else [parents[i : i + BATCH] for i in range(0, len(parents), BATCH)]
        for batch in batches:

            def query(side: _Prepared, batch: list[int] | None = batch) -> str:
                within = None if batch is None else self._within(side, partition, level - 1, batch)
                return (
                    f"SELECT {self._segment(side, partition, level)} AS tc_s, COUNT(*), "
                    f"{side.dialect.sum64(self._row_hash(side))} FROM {side.dataset} AS tc_t"
                    f"{side.condition(within)} GROUP BY 1 ORDER BY 1"
                )

            for segment, left, right in self._merged(query):
                self.segments += 1
                mine = None if left is None else (left[0][1], int(left[0][2] or 0) % MODULUS)
                theirs = None if right is None else (right[0][1], int(right[0][2] or 0) % MODULUS)
                done += max(mine[0] if mine else 0, theirs[0] if theirs else 0)
                if mine != theirs:
                    differing.append(segment)
                self.progress(f"level {level + 1}: checksums", done, total)
        return differing

    def _leaves(self, partition: _Partition, segments: list[int]) -> None:
        """Each row's key and hash in ``segments``, side by side; rows that differ are read and compared."""
        level = len(partition.sizes) - 1
        changed: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
        checked = 0
        # cut by time, a row whose time changed sits in one segment on the left and another on the right: the
        # keys found on one side only are matched across segments at the end (memory: one entry per difference)
        across = partition.kind == "time"
        left_only: dict[Any, tuple[int, tuple[Any, ...]]] = {}
        right_only: dict[Any, tuple[int, tuple[Any, ...]]] = {}
        for start in range(0, len(segments), BATCH):
            batch = segments[start : start + BATCH]

            def query(side: _Prepared, batch: list[int] = batch) -> str:
                raw = ", ".join(side.quoted[k] for k in self.spec.key)
                return (
                    f"SELECT {self._segment(side, partition, level)} AS tc_s, {self._key_text(side)}, "
                    f"{self._row_hash(side)}, {raw} FROM {side.dataset} AS tc_t"
                    f"{side.condition(self._within(side, partition, level, batch))} ORDER BY 1"
                )

            for _segment, left, right in self._merged(query):
                mine = self._keyed(left or [], "left")
                theirs = self._keyed(right or [], "right")
                checked += max(len(mine), len(theirs))
                for key, (digest, raw) in mine.items():
                    other = theirs.pop(key, None)
                    if other is None:
                        if across:
                            left_only[key] = (digest, raw)
                        else:
                            self._note("missing", self.missing, self._display(raw))
                    elif digest != other[0]:
                        changed.append((raw, other[1]))
                for key, (digest, raw) in theirs.items():
                    if across:
                        right_only[key] = (digest, raw)
                    else:
                        self._note("unexpected", self.unexpected, self._display(raw))
                self.progress("rows of differing segments", checked, checked)
                if len(changed) >= BATCH:
                    self._compare_rows(changed)
                    changed = []
        for key, (_digest, raw) in left_only.items():
            other = right_only.pop(key, None)
            if other is None:
                self._note("missing", self.missing, self._display(raw))
            else:
                changed.append((raw, other[1]))
        for _digest, raw in right_only.values():
            self._note("unexpected", self.unexpected, self._display(raw))
        for start in range(0, len(changed), BATCH):
            self._compare_rows(changed[start : start + BATCH])

    def _keyed(self, lines: list[tuple[Any, ...]], which: str) -> dict[Any, tuple[int, tuple[Any, ...]]]:
        """Key text → (hash, raw key) of one segment's lines; a key seen twice is a duplicate."""
        keyed: dict[Any, tuple[int, tuple[Any, ...]]] = {}
        width = len(self.spec.key)
        for line in lines:
            raw = tuple(line[3 : 3 + width])
            digest = int(line[2]) % MODULUS
            if line[1] in keyed:
                self._note("duplicates", self.duplicates, {"side": which, "key": self._display(raw)})
                self.unlike_duplicates += keyed[line[1]][0] != digest
            keyed[line[1]] = (digest, raw)
        return keyed

    def _compare_rows(self, changed: list[tuple[tuple[Any, ...], tuple[Any, ...]]]) -> None:
        """Read the rows whose hashes differ from both sides and list the fields that differ."""
        left_rows, right_rows = self._both(
            lambda side: self._read_rows(side, [pair[0 if side is self.sides[0] else 1] for pair in changed])
        )
        names = list(self.sides[0].texts)
        for key_text, (left_texts, left_values) in left_rows.items():
            right = right_rows.get(key_text)
            if right is None:  # changed between the two reads
                continue
            right_texts, right_values = right
            row_differs = False
            for index, name in enumerate(names):
                if left_texts[index] == right_texts[index]:
                    continue
                tolerance = self.spec.tolerance.get(name)
                if tolerance is not None and equal(left_values[index], right_values[index], tolerance):
                    continue
                row_differs = True
                if self.spec.limit == 0 or len(self.mismatches) < self.spec.limit:
                    key = self._display(tuple(left_values[: len(self.spec.key)]))
                    expected, actual = jsonable(left_values[index]), jsonable(right_values[index])
                    self.mismatches.append({"key": key, "field": name, "expected": expected, "actual": actual})
            if row_differs:
                self.counts["changed"] += 1

    def _read_rows(self, side: _Prepared, keys: list[tuple[Any, ...]]) -> dict[Any, tuple[list[Any], list[Any]]]:
        """Key text → (the texts of its values, the values) of the rows with ``keys`` on one side."""
        names = list(side.texts)
        columns = ", ".join([self._key_text(side), *side.texts.values(), *(side.quoted[n] for n in names)])
        binds: dict[str, Any] = {}
        if len(self.spec.key) == 1:
            match = f"{side.quoted[self.spec.key[0]]} IN :tc_keys"
            binds["tc_keys"] = [key[0] for key in keys]
        else:
            alternatives = []
            for row, key in enumerate(keys):
                parts = []
                for position, name in enumerate(self.spec.key):
                    binds[f"tc_{row}_{position}"] = key[position]
                    parts.append(f"{side.quoted[name]} = :tc_{row}_{position}")
                alternatives.append("(" + " AND ".join(parts) + ")")
            match = " OR ".join(alternatives)
        statement = text(f"SELECT {columns} FROM {side.dataset} AS tc_t{side.condition(match)}")
        statement = statement.bindparams(*side.binds)
        if "tc_keys" in binds:
            statement = statement.bindparams(bindparam("tc_keys", expanding=True))
        found: dict[Any, tuple[list[Any], list[Any]]] = {}
        for row in self._rows(side, statement, binds):
            found[row[0]] = (list(row[1 : 1 + len(names)]), list(row[1 + len(names) :]))
        return found

    # -- results -----------------------------------------------------------------------------------------
    def _note(self, kind: str, listed: list[Any], item: Any) -> None:
        self.counts[kind] += 1
        if self.spec.limit == 0 or len(listed) < self.spec.limit:
            listed.append(item)

    def _display(self, raw: tuple[Any, ...]) -> Any:
        if len(raw) == 1:
            return jsonable(raw[0])
        return {name: jsonable(value) for name, value in zip(self.spec.key, raw, strict=True)}

    def _result(self, forms: dict[str, Form], rows: list[int]) -> Reconciliation:
        left, right = self.sides
        counts = self.counts
        differs = any(counts.values())
        said = [f"{n} {kind}" for kind, n in counts.items() if n]
        reason = (
            f"the tables differ: {', '.join(said)}"
            if differs
            else f"the tables match: {rows[0]:,} rows, {len(forms) - len(self.spec.key)} fields compared"
        )
        return Reconciliation(
            verdict="failed" if differs else "passed",
            left=Side(_where(left), left.table.name, rows[0]),
            right=Side(_where(right), right.table.name, rows[1]),
            differences=dict(counts),
            missing=self.missing,
            unexpected=self.unexpected,
            duplicates=self.duplicates,
            mismatches=self.mismatches,
            fields=[
                {"name": name, "form": form.name, "digits": form.digits}
                for name, form in forms.items()
                if name not in self.spec.key
            ],
            stats={
                "levels": self.levels,
                "segments": self.segments,
                "queries": {"left": left.queries, "right": right.queries},
                "rows_read": {"left": left.rows_read, "right": right.rows_read},
                "seconds": round(time.monotonic() - self.started, 3),
            },
            reason=reason,
            unlike_duplicates=self.unlike_duplicates,
        )

    # -- the two sides -----------------------------------------------------------------------------------
    def _both(self, work: Callable[[_Prepared], Any]) -> Any:
        """``work`` on both sides at once: (left's answer, right's answer)."""
        with ThreadPoolExecutor(2, thread_name_prefix="tc-recon") as pool:
            futures = [pool.submit(work, side) for side in self.sides]
            return tuple(future.result() for future in futures)

    def _rows(self, side: _Prepared, sql: Any, binds: dict[str, Any] | None = None) -> Iterator[Any]:
        """The rows of one statement on one side, streamed in chunks (server-side cursors where there are)."""
        statement = side.statement(sql) if isinstance(sql, str) else sql
        side.queries += 1
        with side.source.session() as connection, side.dialect.prepared(connection):
            streamed = connection.execution_options(stream_results=True, max_row_buffer=CHUNK)
            result = streamed.execute(statement, binds or {})
            for chunk in result.partitions(CHUNK):
                side.rows_read += len(chunk)
                yield from chunk

    def _merged(self, query: Callable[[_Prepared], str]) -> Iterator[tuple[int, list[Any] | None, list[Any] | None]]:
        """The lines of ``query`` on both sides grouped by their first column (a segment, both sorted by it):
        (segment, the left side's lines or None, the right side's lines or None)."""
        streams = [_Stream(self, side, query(side)) for side in self.sides]
        try:
            left, right = (stream.groups() for stream in streams)
            mine, theirs = next(left, None), next(right, None)
            while mine is not None or theirs is not None:
                if theirs is None or (mine is not None and mine[0] < theirs[0]):
                    assert mine is not None
                    yield mine[0], mine[1], None
                    mine = next(left, None)
                elif mine is None or theirs[0] < mine[0]:
                    yield theirs[0], None, theirs[1]
                    theirs = next(right, None)
                else:
                    yield mine[0], mine[1], theirs[1]
                    mine, theirs = next(left, None), next(right, None)
        finally:
            for stream in streams:
                stream.stop()


class _Stream:
    """One side's query read by a thread of its own into a small queue, so both servers work at once."""

    _END = object()

    def __init__(self, reconciler: _Reconciler, side: _Prepared, sql: str) -> None:
        self.chunks: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(reconciler, side, sql), daemon=True)
        self.thread.start()

    def _read(self, reconciler: _Reconciler, side: _Prepared, sql: str) -> None:
        try:
            chunk: list[Any] = []
            for row in reconciler._rows(side, sql):
                chunk.append(row)
                if len(chunk) >= CHUNK:
                    if not self._put(chunk):
                        return
                    chunk = []
            if chunk and not self._put(chunk):
                return
            self._put(self._END)
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._put(exc)

    def _put(self, item: Any) -> bool:
        while not self.stopping.is_set():
            try:
                self.chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def groups(self) -> Iterator[tuple[int, list[Any]]]:
        """(segment, its lines), in the order the query sorted them."""
        current: int | None = None
        lines: list[Any] = []
        while True:
            item = self.chunks.get()
            if item is self._END:
                break
            if isinstance(item, BaseException):
                raise item
            for row in item:
                segment = int(row[0])
                if segment != current:
                    if current is not None:
                        yield current, lines
                    current, lines = segment, []
                lines.append(row)
        if current is not None:
            yield current, lines

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)


def _finer(width: int) -> int:
    """The width of the next level's segments: the smallest divisor of ``width`` that cuts it in at most
    FACTOR parts (an hour: 15 s, then 1 s), so that the segments of each level nest in the ones above."""
    least = math.ceil(width / FACTOR)
    return next(d for d in range(least, width + 1) if width % d == 0)


def _where(side: _Prepared) -> str:
    """The side's database URL as it was given, its password hidden."""
    return make_url(side.source.options.url).render_as_string(hide_password=True)


__all__ = ["ReconSpec", "Table", "reconcile"]
