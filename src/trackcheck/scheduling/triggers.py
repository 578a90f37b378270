"""The APScheduler trigger of a stage's polling job, from the plan (interval, cron, at) and a run's overrides."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trackcheck.plan.timing import schedule_signature, stage_interval

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger
    from apscheduler.triggers.cron import CronTrigger

    from trackcheck.plan.model import Plan, StageSpec


def cron_trigger(expression: str) -> CronTrigger:
    """The trigger of a five-field crontab expression in UTC (a stage's ``cron``, a schedule's): the one place
    an expression becomes a trigger; ``plan/cron.py`` checks it first. ValueError if it is not one."""
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(expression, timezone=UTC)


def build_trigger(plan: Plan, stage: StageSpec, overrides: dict[str, Any]) -> BaseTrigger:
    """IntervalTrigger (default), CronTrigger or DateTrigger, all in UTC."""
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    signature = schedule_signature(plan, stage, overrides)
    if signature.startswith("cron:") and stage.cron is not None:
        return cron_trigger(stage.cron)
    if signature.startswith("at:") and stage.at is not None:
        at = stage.at if stage.at.tzinfo else stage.at.replace(tzinfo=UTC)
        return DateTrigger(run_date=max(at, datetime.now(UTC)), timezone=UTC)
    return IntervalTrigger(seconds=stage_interval(plan, stage, overrides).total_seconds(), timezone=UTC)
