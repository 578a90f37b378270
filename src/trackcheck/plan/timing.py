"""When a stage is polled and how long it may wait: the plan's settings with a run's overrides applied.

Pure functions of the plan: the engine uses them to group runs and set deadlines, the poller to build each
group's trigger.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trackcheck.plan.model import Plan, StageSpec


def stage_interval(plan: Plan, stage: StageSpec, overrides: Mapping[str, Any]) -> timedelta:
    """The time between two polls: the run's ``interval`` override (seconds), else the stage's setting."""
    if overrides.get("interval") is not None:
        return timedelta(seconds=float(overrides["interval"]))
    interval: timedelta = plan.setting(stage, "interval")
    return interval


def stage_timeout(plan: Plan, stage: StageSpec, overrides: Mapping[str, Any]) -> timedelta:
    """How long the stage may wait for its data: the run's ``timeout`` override (seconds), else the setting."""
    if overrides.get("timeout") is not None:
        return timedelta(seconds=float(overrides["timeout"]))
    timeout: timedelta = plan.setting(stage, "timeout")
    return timeout


def schedule_signature(plan: Plan, stage: StageSpec, overrides: Mapping[str, Any]) -> str:
    """Equal for runs that poll this stage on the same schedule (so they can share one job)."""
    if overrides.get("interval") is None and stage.cron:
        return f"cron:{stage.cron}"
    if overrides.get("interval") is None and stage.at:
        return f"at:{stage.at.isoformat()}"
    return f"every:{stage_interval(plan, stage, overrides).total_seconds()}"
