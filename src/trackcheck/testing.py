"""Fakes for fast tests: an in-memory source whose records tests set and which records every fetch.

Plans use it as ``type: memory`` with ``name: <table>``; tests fill ``MemorySource.tables[<table>]``.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any, ClassVar

from trackcheck.errors import SourceQueryError
from trackcheck.sources import register
from trackcheck.sources.base import (
    FetchRequest,
    FetchResult,
    Record,
    Source,
    SourceOptions,
    apply_select,
    filter_records,
)


class MemoryOptions(SourceOptions):
    table: str
    fail: bool = False


@register
class MemorySource(Source):
    """Reads ``tables[table]``; every fetch is appended to ``fetches[table]`` (filters as received)."""

    type_name = "memory"
    options_model = MemoryOptions
    tables: ClassVar[dict[str, list[Record]]] = defaultdict(list)
    fetches: ClassVar[dict[str, list[FetchRequest]]] = defaultdict(list)
    failing: ClassVar[set[str]] = set()
    _lock = threading.Lock()

    @classmethod
    def reset(cls) -> None:
        cls.tables.clear()
        cls.fetches.clear()
        cls.failing.clear()

    def fetch(self, request: FetchRequest) -> FetchResult:
        options: Any = self.options
        with self._lock:
            self.fetches[options.table].append(request)
            if options.fail or options.table in self.failing:
                raise self.error(SourceQueryError, f"table {options.table!r} is failing", request.stage)
            records = [dict(r) for r in self.tables[options.table]]
        return FetchResult(filter_records(apply_select(records, request.stage.select), request.filters))
