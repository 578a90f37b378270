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
    """``split`` for rows held in columns: each where field's distinct values are matched the way ``split``
    matches them (``canonical``: ``"5"`` is 5, a field the rows lack is null), then each run's rows are taken
    with one filter in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = rows.table
    if not wheres:
        return []
    distinct: dict[str, tuple[Any, list[Any]]] = {}  # field -> (its column, its distinct values)
    parts = []
    for where in wheres:
        if not where:
            parts.append(rows)
            continue
        mask = None
        for field, value in where.items():
            if field not in distinct:
                column = table.column(field) if field in table.column_names else pa.nulls(table.num_rows)
                distinct[field] = (column, pc.unique(column).to_pylist())
            column, values = distinct[field]
            accepted = {canonical(v) for v in (value if isinstance(value, list) else [value])}
            chosen = pa.array([v for v in values if canonical(v) in accepted], column.type)
            matches = pc.fill_null(pc.is_in(column, value_set=chosen), False)
            mask = matches if mask is None else pc.and_(mask, matches)
        # every row (one run, or runs sharing their values): the same rows, not a copy of them
        parts.append(rows if pc.all(mask).as_py() else TableRecords(table.filter(mask)))
    return parts
