"""The APScheduler trigger of a stage's polling job, from the plan (interval, cron, at) and a run's overrides."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trackcheck.plan.timing import schedule_signature, stage_interval

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

    from trackcheck.plan.model import Plan, StageSpec


def build_trigger(plan: Plan, stage: StageSpec, overrides: dict[str, Any]) -> BaseTrigger:
    """IntervalTrigger (default), CronTrigger or DateTrigger, all in UTC."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    signature = schedule_signature(plan, stage, overrides)
    if signature.startswith("cron:"):
        return CronTrigger.from_crontab(stage.cron, timezone=UTC)
    if signature.startswith("at:") and stage.at is not None:
        at = stage.at if stage.at.tzinfo else stage.at.replace(tzinfo=UTC)
        return DateTrigger(run_date=max(at, datetime.now(UTC)), timezone=UTC)
    return IntervalTrigger(seconds=stage_interval(plan, stage, overrides).total_seconds(), timezone=UTC)
