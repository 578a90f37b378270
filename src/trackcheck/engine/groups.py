"""Batching: which runs share one query, and how the rows of that query are split back per run.

Runs waiting at the same stage of the same plan version, on the same schedule, whose fetch differs only in
``where`` values, form a group: one APScheduler job, one source query per tick for up to ``batch_size`` runs,
the ``where`` values passed as one array per field. Each row goes back to the runs whose values it carries.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from trackcheck.compare.checks import fast_canonical as canonical  # canonical(), without its regexes for ids
from trackcheck.compare.tables import TableRecords
from trackcheck.sources.base import Record, filter_records


@lru_cache(maxsize=4096)  # runs submitted together mostly share their group: one digest, not one per run
def group_key(plan_id: int, idx: int, batch_key: str, schedule: str) -> str:
    """A short stable id for a group (it names the group's jobs)."""
    digest = hashlib.sha256(json.dumps([plan_id, idx, batch_key, schedule]).encode()).hexdigest()[:24]
    return f"{plan_id}-{idx}-{digest}"


def union_filters(wheres: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Each where field with every value any run accepts, deduplicated, in first-seen order."""
    merged: dict[str, dict[Any, Any]] = defaultdict(dict)
    for where in wheres:
        for field, value in where.items():
            for one in value if isinstance(value, list) else [value]:
                merged[field].setdefault(canonical(one), one)
    return {field: list(values.values()) for field, values in merged.items()}


def split(records: list[Record], wheres: Sequence[Mapping[str, Any]]) -> list[list[Record]]:
    """For each run's where (same order), the records that belong to it. One pass over the rows."""
    if not wheres:
        return []
    fields = sorted(wheres[0])
    if not fields:
        return [records for _ in wheres]
    if any(isinstance(v, list) for where in wheres for v in where.values()):
        return [filter_records(records, {f: v if isinstance(v, list) else [v] for f, v in w.items()}) for w in wheres]
    by_values: dict[tuple[Any, ...], list[Record]] = defaultdict(list)
    for record in records:
        by_values[tuple(canonical(record.get(f)) for f in fields)].append(record)
    return [by_values.get(tuple(canonical(w.get(f)) for f in fields), []) for w in wheres]


def split_table(rows: TableRecords, wheres: Sequence[Mapping[str, Any]]) -> list[TableRecords]:
    """``split`` for rows held in columns, in one pass over them as ``split`` makes: each row is numbered by
    the canonical forms of its where fields (``"5"`` is 5, a field the rows lack is null), the rows are grouped
    by them once, and each run takes the groups of its own values, in the rows' order."""
    import itertools

    import numpy
    import pyarrow as pa
    import pyarrow.compute as pc

    if not wheres:
        return []
    fields = sorted(wheres[0])
    if not fields:
        return [rows for _ in wheres]
    table = rows.table
    ids: dict[Any, int] = {}  # canonical value -> its number
    numbered = []  # per field, each row's number
    for field in fields:
        column = table.column(field) if field in table.column_names else pa.chunked_array([pa.nulls(table.num_rows)])
        encoded = pc.dictionary_encode(column).combine_chunks()
        numbers = [ids.setdefault(canonical(v), len(ids)) for v in encoded.dictionary.to_pylist()]
        numbers.append(ids.setdefault(canonical(None), len(ids)))  # the number of a null row
        numbered.append(numpy.array(numbers)[encoded.indices.fill_null(len(numbers) - 1).to_numpy()])
    keys, inverse = numpy.unique(numpy.column_stack(numbered), axis=0, return_inverse=True)
    group_of = {tuple(key): group for group, key in enumerate(keys.tolist())}
    order = numpy.argsort(inverse.ravel(), kind="stable")  # each group's rows together, in their order
    bounds = numpy.searchsorted(inverse.ravel()[order], numpy.arange(len(keys) + 1))
    parts = []
    for where in wheres:
        choices = [[canonical(v) for v in (w if isinstance(w, list) else [w])] for w in map(where.get, fields)]
        groups = {
            group_of.get(tuple(ids.get(c, -1) for c in combination)) for combination in itertools.product(*choices)
        }
        taken = [order[bounds[g] : bounds[g + 1]] for g in groups if g is not None]
        chosen = numpy.sort(numpy.concatenate(taken)) if taken else numpy.zeros(0, dtype=numpy.int64)
        # every row (one run, or runs sharing their values): the same rows, not a copy of them
        parts.append(rows if len(chosen) == table.num_rows else TableRecords(table.take(chosen)))
    return parts
