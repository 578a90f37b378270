"""Cron expressions of stages and schedules: parsed as the scheduler parses them, and refused when they do
not fire in every year.

A 5-field crontab has no year, so whether it fires in a given year depends only on the kind of year: leap
or not, and the weekday of 1 January. Checking one year of each of the 14 kinds decides, once and for all,
whether an expression fires every year. ``0 0 30 2 *`` (never) and ``0 0 29 2 *`` (leap years only) do
not. The rule does not depend on today's date, so a plan that loads today loads every day after: a rule
such as "fires within 366 days from now" would accept ``0 0 29 2 *`` a year before a 29 February and then
refuse the stored plan, breaking its runs, the day after.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from functools import lru_cache

#: the longest cron expression (schedules store theirs in a String(200) column)
MAX_CRON_CHARS = 200


def _year_kinds() -> tuple[int, ...]:
    """One year of each kind (leap or not, and the weekday of 1 January); 2001-2028 holds all 14 kinds."""
    kinds: dict[tuple[bool, int], int] = {}
    for year in range(2001, 2029):
        kinds.setdefault((calendar.isleap(year), calendar.weekday(year, 1, 1)), year)
    return tuple(sorted(kinds.values()))


_YEARS = _year_kinds()


def check_cron(expr: str) -> str:
    """``expr`` if it is a 5-field crontab (``minute hour day month weekday``, as APScheduler 3's
    ``CronTrigger.from_crontab`` reads it) that fires at least once in every year; else a ValueError
    saying why, with the expression quoted. For a stage's ``cron`` and a schedule's."""
    if not isinstance(expr, str):
        raise ValueError(f"{expr!r:.60} is not a cron expression")
    if len(expr) > MAX_CRON_CHARS:
        raise ValueError(f"a cron expression of {len(expr)} characters is longer than {MAX_CRON_CHARS}")
    return _check(expr)


@lru_cache(maxsize=1024)  # the verdict depends on the expression only: plans are loaded again and again
def _check(expr: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"{expr!r} is not a cron expression (minute hour day month weekday): {exc}") from None
    minute, hour, day, month, weekday = expr.split()
    silent = [
        year
        for year in _YEARS
        if CronTrigger(
            year=year, month=month, day=day, day_of_week=weekday, hour=hour, minute=minute, timezone=UTC
        ).get_next_fire_time(None, datetime(year, 1, 1, tzinfo=UTC))
        is None
    ]
    if len(silent) == len(_YEARS):
        raise ValueError(f"{expr!r} never fires (no date matches its day, month and weekday)")
    if silent:
        year = silent[0]
        kind = "leap" if calendar.isleap(year) else "common"
        first = calendar.day_name[calendar.weekday(year, 1, 1)]
        raise ValueError(
            f"{expr!r} does not fire in every year (not in {year}, a {kind} year starting on a {first}): "
            "a cron must fire at least once a year"
        )
    return expr
