"""The outcome of checking one run's records at one stage: a value, with its evidence.

"The data is wrong" (failed), "not all there yet" (waiting) and "all there and right" (passed) are results;
"could not look" is a SourceError raised before any comparison happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

Verdict = Literal["passed", "waiting", "failed"]


@dataclass
class Comparison:
    """Evidence of one check. Keys are shown as users wrote them (a value, or a map for composite keys).

    - ``missing``: reference keys not found; ``unexpected``: found keys not in the reference;
      ``duplicates``: keys found more than once;
    - ``mismatches``: ``{"key", "field", "expected", "actual"}``;
    - ``violations``: ``{"key", "path", "message"}`` from JSON Schema (or "unplanned" events);
    - ``counts``: ``{"group": {...}, "expected", "actual", "difference"}`` for each group that differs
      (``aggregates`` add ``"measure"``: ``count``, ``sum(amount)``...);
    - ``warnings``: what a check of ``severity: warn`` found wrong (the verdict stays as if it were not);
    - ``latency``: how late the records arrived (``{"n", "p50", "p95", "p99", "max"}`` in seconds), for a
      stage with a ``time_field``; None otherwise.
    """

    verdict: Verdict
    expected: int
    found: int
    missing: list[Any] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)
    duplicates: list[Any] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    counts: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The comparison as plain data, its lists and dicts copied (as ``dataclasses.asdict`` would).

        Written out because ``asdict`` deep-copies every value one by one: over the 10,000 runs of one poll
        tick it took a tenth of the tick (benchmark B1). Evidence holds JSON values only, so scalars are
        shared, containers copied.
        """
        return {f.name: _copied(getattr(self, f.name)) for f in _FIELDS}


_NESTED = frozenset({dict, list, tuple})


def _copied(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: _copied(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        if _NESTED.isdisjoint(map(type, value)):
            return kind(value)  # scalars only (keys, numbers): one C-level copy
        return kind(map(_copied, value))
    return value


_FIELDS = fields(Comparison)
