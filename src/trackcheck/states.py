"""Every set of states trackcheck knows, in one place: a run's, and a stage's (which a poll's outcome names too).

They are ``StrEnum``s: stored as their text in the state database, shown as it in the API and the dashboard,
and equal to it (``RunStatus.PASSED == "passed"``), so rows read back compare without conversion.

A run is ``running`` until it ends ``passed``, ``failed``, ``error`` or ``cancelled``. Its stages start
``pending``; the active one is ``waiting`` (polled until it ends ``passed``, ``failed`` or ``error``); the
stages after one that did not pass, or after a cancel, become ``skipped``. A poll's outcome is what the stage
would be after it: ``waiting``, ``passed``, ``failed`` or ``error`` (engine/outcome.py decides).
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"


class StageStatus(StrEnum):
    PENDING = "pending"
    WAITING = "waiting"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"


#: a run that has ended (retention may delete it, its webhook is due)
RUN_ENDED = frozenset({RunStatus.PASSED, RunStatus.FAILED, RunStatus.ERROR, RunStatus.CANCELLED})
#: a stage that a poll has ended: the run ends with it, or (passed) moves on
STAGE_ENDED = frozenset({StageStatus.PASSED, StageStatus.FAILED, StageStatus.ERROR})
