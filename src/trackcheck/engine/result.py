"""A run's result: the JSON document ``trackcheck run --json``, ``verify()`` and ``GET /api/runs/{id}`` share.

{"run_id", "plan", "status", "params", "stages": [{"name", "status", "attempts", "started_at",
 "finished_at", "expected", "found", "missing", "unexpected", "duplicates", "mismatches",
 "violations", "counts", "warnings", "latency", "error", "error_kind", "reason"}]}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from trackcheck.store.repository import aware

if TYPE_CHECKING:
    from trackcheck.store.models import Run, RunStage

EVIDENCE = ("missing", "unexpected", "duplicates", "mismatches", "violations", "counts", "warnings")
#: evidence lists longer than this are cut when stored; ``truncated`` then gives the full lengths
EVIDENCE_CAP = 1000


@dataclass
class StageResult:
    name: str
    status: str
    attempts: int
    started_at: str | None
    finished_at: str | None
    expected: int | None
    found: int | None
    missing: list[Any] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)
    duplicates: list[Any] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    counts: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: how late the stage's records arrived, in seconds (``n``, ``p50``, ``p95``, ``p99``, ``max``), when the
    #: stage has a ``time_field``
    latency: dict[str, Any] | None = None
    error: str | None = None
    #: ``permanent`` (the stage ended without waiting: it cannot fix itself) or ``transient`` (retried)
    error_kind: str | None = None
    reason: str | None = None


@dataclass
class RunResult:
    """The outcome of one run; ``ok`` is True only when every stage passed."""

    run_id: str
    plan: str
    status: str
    params: dict[str, Any]
    stages: list[StageResult]

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def stage(self, name: str) -> StageResult:
        return next(s for s in self.stages if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def capped_evidence(evidence: dict[str, Any]) -> dict[str, Any]:
    """Evidence as stored: each list cut to EVIDENCE_CAP items, the full lengths kept in ``truncated``."""
    stored: dict[str, Any] = {}
    truncated: dict[str, int] = {}
    for name in EVIDENCE:
        items = evidence.get(name) or []
        if len(items) > EVIDENCE_CAP:
            truncated[name] = len(items)
        stored[name] = items[:EVIDENCE_CAP]
    if truncated:
        stored["truncated"] = truncated
    if evidence.get("latency") is not None:
        stored["latency"] = evidence["latency"]
    return stored


def build_result(run: Run, stages: list[RunStage]) -> RunResult:
    return RunResult(
        run_id=run.id,
        plan=run.plan_name,
        status=run.status,
        params=dict(run.params),
        stages=[_stage(stage) for stage in stages],
    )


def _stage(stage: RunStage) -> StageResult:
    evidence = stage.evidence or {}
    return StageResult(
        name=stage.name,
        status=stage.status,
        attempts=stage.attempts,
        started_at=_iso(stage.started_at),
        finished_at=_iso(stage.finished_at),
        expected=stage.expected,
        found=stage.found,
        error=stage.error,
        latency=evidence.get("latency"),
        error_kind=stage.error_kind,
        reason=stage.reason,
        **{name: list(evidence.get(name) or []) for name in EVIDENCE},
    )


def _iso(moment: datetime | None) -> str | None:
    value = aware(moment)
    return value.isoformat() if value else None
