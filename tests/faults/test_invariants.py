"""The invariant checks themselves: a state database holding one run per kind of damage, and each is found.

Without this, a scenario that reports "lost 0, stuck 0" could be a checker that never finds anything.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tests.faults.invariants import Expected, check
from trackcheck.store.models import PlanVersion, Poll, Run, RunStage
from trackcheck.store.repository import Store

PASSED = Expected("passes", frozenset({"passed"}))
FAILED = Expected("fails", frozenset({"failed"}), "timed out")
ERROR = Expected("errs", frozenset({"error"}))
NOW = datetime.now(UTC)
AGO = NOW - timedelta(minutes=5)


def _run(session: Session, plan_id: int, run_id: str, status: str, stages: list[dict[str, Any]]) -> None:
    """A run and its stages; each stage dict: status, polls (outcomes, one a second from AGO), and optionally
    attempts (default: as many as polls), reason, deadline, finished (default: at its last poll if ended)."""
    ended = status != "running"
    session.add(
        Run(
            id=run_id, plan_id=plan_id, plan_name="p", status=status, params={}, expect=[], overrides={},
            created_at=AGO, finished_at=NOW if ended else None, error=None, notify=None,
        )
    )  # fmt: skip
    session.flush()
    for idx, stage in enumerate(stages):
        polls = stage.get("polls", [])
        times = [AGO + timedelta(seconds=i) for i in range(len(polls))]
        terminal = stage["status"] in ("passed", "failed", "error")
        session.add(
            RunStage(
                run_id=run_id, idx=idx, name=f"s{idx}", status=stage["status"],
                attempts=stage.get("attempts", len(polls)), errors_in_row=0,
                deadline=stage.get("deadline", datetime.now(UTC) + timedelta(minutes=5)), started_at=AGO,
                finished_at=stage.get("finished", times[-1] if terminal and times else None),
                reason=stage.get("reason", "all 1 expected events found and matching"),
            )
        )  # fmt: skip
        for at, outcome in zip(times, polls, strict=True):
            session.add(
                Poll(run_id=run_id, stage_idx=idx, polled_at=at, outcome=outcome, found=0, expected=1, duration_ms=1.0)
            )


def test_each_kind_of_damage_is_found(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store(url).open()
    try:
        with Session(store.engine) as session:
            plan = PlanVersion(name="p", version=1, text="", base_dir=None, created_at=AGO, deleted=False)
            session.add(plan)
            session.flush()
            ok_stage = {"status": "passed", "polls": ["waiting", "passed"]}
            timed_out = {"status": "failed", "polls": ["waiting", "failed"], "reason": "timed out after 5s: ..."}
            _run(session, plan.id, "fine", "passed", [ok_stage, ok_stage])
            _run(session, plan.id, "fine_failure", "failed", [ok_stage, timed_out])
            _run(session, plan.id, "still_waiting", "running", [{"status": "waiting", "polls": ["waiting"]}])
            overdue = {"status": "waiting", "polls": ["waiting"], "deadline": NOW - timedelta(minutes=1)}
            _run(session, plan.id, "stuck", "running", [ok_stage, overdue])
            _run(session, plan.id, "twice", "passed", [{"status": "passed", "polls": ["passed", "passed"]}])
            late = {"status": "error", "polls": ["error", "error"], "finished": AGO, "reason": "source down"}
            _run(session, plan.id, "late", "error", [late])
            _run(
                session,
                plan.id,
                "double",
                "passed",
                [{"status": "passed", "polls": ["waiting", "passed"], "attempts": 1}],
            )
            _run(session, plan.id, "inconsistent", "failed", [ok_stage, {**ok_stage, "reason": "timed out"}])
            _run(session, plan.id, "wrong", "failed", [timed_out])
            _run(session, plan.id, "unexplained", "error", [{"status": "error", "polls": ["error"], "reason": ""}])
            session.commit()
        expected = {
            "fine": PASSED, "fine_failure": FAILED, "still_waiting": PASSED, "lost": PASSED, "stuck": PASSED,
            "twice": PASSED, "late": ERROR, "double": PASSED, "inconsistent": FAILED, "wrong": PASSED,
            "unexplained": ERROR,
        }  # fmt: skip
        verdict = check(url, expected, grace=10)
    finally:
        store.close()

    def ids(found: list[str]) -> list[str]:
        return sorted(entry.split(" ", 1)[0] for entry in found)

    assert ids(verdict.lost) == ["lost"]
    assert ids(verdict.stuck) == ["stuck"]
    assert ids(verdict.duplicated) == ["late", "twice"]
    assert ids(verdict.double_polls) == ["double"]
    assert ids(verdict.inconsistent) == ["inconsistent"]
    assert ids(verdict.wrong) == ["unexplained", "wrong"]
    assert not verdict.ok
    assert "lost 1, stuck 1, duplicated transitions 2, double polls 1, inconsistent 1, wrong outcome 2" in verdict.line(
        "self-test", 0
    )
