"""What a reconciliation found: every difference counted, the first ones listed with both values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class Side:
    """One of the two tables as the result names it: where it is (the URL, its password hidden) and its rows."""

    source: str
    table: str
    rows: int


@dataclass
class Reconciliation:
    """The differences between a left (reference) and a right table, by key.

    - ``missing``: keys of the left table the right one lacks; ``unexpected``: keys only the right one has;
    - ``mismatches``: ``{"key", "field", "expected", "actual"}`` (left value, right value) for each compared
      field that differs in a row of both tables;
    - ``duplicates``: keys that one table holds more than once (``unlike_duplicates``: how many of them have
      copies that differ in a compared field);
    - ``differences``: how many of each there are in all (``changed`` counts rows, not fields); the lists
      stop at the ``limit`` the reconciliation was asked for;
    - ``fields``: how each field was compared (``form`` and ``digits``: see ``recon.columns``);
    - ``stats``: the work done (levels, segments, queries, rows read from each side, seconds).
    """

    verdict: Literal["passed", "failed"]
    left: Side
    right: Side
    differences: dict[str, int]
    missing: list[Any] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)
    duplicates: list[Any] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    unlike_duplicates: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
