"""The outcome of checking one run's records at one stage: a value, with its evidence.

"The data is wrong" (failed), "not all there yet" (waiting) and "all there and right" (passed) are results;
"could not look" is a SourceError raised before any comparison happens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["passed", "waiting", "failed"]


@dataclass
class Comparison:
    """Evidence of one check. Keys are shown as users wrote them (a value, or a map for composite keys).

    - ``missing``: reference keys not found; ``unexpected``: found keys not in the reference;
      ``duplicates``: keys found more than once;
    - ``mismatches``: ``{"key", "field", "expected", "actual"}``;
    - ``violations``: ``{"key", "path", "message"}`` from JSON Schema (or "unplanned" events);
    - ``counts``: ``{"group": {...}, "expected", "actual", "difference"}`` for each group that differs.
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
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
