"""What one poll means for one run's stage: the pure decision, kept apart from I/O so it is easy to test.

passed  - complete and consistent (an ``absent`` stage: ``for`` went by with nothing found);
waiting - records still missing (or a mismatch with ``on_mismatch: wait``), nothing wrong in what is there;
failed  - the data is wrong, or still incomplete when the stage times out (an ``absent`` stage: a record
          arrived, or the stage timed out before ``for`` went by);
error   - the source could not be read: a permanent error (it cannot fix itself) at once, a transient one
          retried with back-off, an error once ``retries`` are used up or the stage timed out while the
          source was still failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from trackcheck.compare.result import Comparison
from trackcheck.plan.durations import format_duration
from trackcheck.states import StageStatus

ERROR, FAILED, PASSED, WAITING = StageStatus.ERROR, StageStatus.FAILED, StageStatus.PASSED, StageStatus.WAITING


@dataclass(frozen=True)
class Decision:
    #: the stage's status after this poll: waiting, passed, failed, error
    status: StageStatus
    #: what this poll saw: waiting, passed, failed, error
    outcome: StageStatus
    reason: str | None
    errors_in_row: int


def decide(
    *,
    comparison: Comparison | None,
    error: str | None,
    now: datetime,
    permanent: bool = False,
    deadline: datetime | None,
    timeout: timedelta,
    errors_in_row: int,
    retries: int | None,
    started: datetime | None = None,
    absent_for: timedelta | None = None,
) -> Decision:
    """The stage status after a poll that produced ``comparison`` (or raised ``error``, ``permanent`` when it
    cannot fix itself: the stage then ends at once unless the plan asks for ``retries``).

    ``absent_for`` is the ``for`` of an ``absent`` stage, which ``started`` at that instant: a check cannot
    know how long nothing has arrived, so its verdict never says passed; the stage passes here, at the first
    poll once ``for`` went by with no failure."""
    timed_out = deadline is not None and now >= deadline
    if error is not None:
        in_row = errors_in_row + 1
        if permanent and retries is None:
            return Decision(ERROR, ERROR, f"permanent source error, not retried: {error}", in_row)
        if retries is not None and in_row > retries:
            return Decision(ERROR, ERROR, f"source error, {retries} retries used up: {error}", in_row)
        if timed_out:
            return Decision(
                ERROR,
                ERROR,
                f"source still failing at the timeout ({format_duration(timeout)}): {error}",
                in_row,
            )
        return Decision(WAITING, ERROR, f"source error (attempt {in_row}), retrying: {error}", in_row)
    assert comparison is not None
    if absent_for is not None and comparison.verdict != "failed":
        return _absent(comparison, now, started, absent_for, timed_out, timeout)
    if comparison.verdict == "waiting" and timed_out:
        return Decision(
            FAILED,
            FAILED,
            f"timed out after {format_duration(timeout)}: {comparison.reason}",
            0,
        )
    verdict = StageStatus(comparison.verdict)
    return Decision(verdict, verdict, comparison.reason, 0)


def _absent(
    comparison: Comparison,
    now: datetime,
    started: datetime | None,
    absent_for: timedelta,
    timed_out: bool,
    timeout: timedelta,
) -> Decision:
    """An ``absent`` stage with nothing against it (a warning of ``severity: warn`` aside): it passes once
    ``for`` went by since it started. A timeout shorter than ``for`` cannot be met: the stage then fails at
    its timeout saying so (a run's ``--timeout`` can shorten any stage, so this is decided when it happens)."""
    quiet = now - started if started is not None else timedelta(0)
    wanted = format_duration(absent_for)
    if quiet >= absent_for:
        return Decision(PASSED, PASSED, f"after {wanted}: {comparison.reason}", 0)
    if timed_out:
        return Decision(
            FAILED,
            FAILED,
            f"timed out after {format_duration(timeout)}, before absent.for ({wanted}) went by: "
            f"{comparison.reason}; give the stage a timeout of at least {wanted}",
            0,
        )
    whole = int(quiet.total_seconds())
    so_far = format_duration(timedelta(seconds=whole)) if whole else "0s"
    return Decision(WAITING, WAITING, f"{comparison.reason} ({so_far} of {wanted})", 0)
