"""The pure functions that say when a stage is polled and how long it waits (``plan/timing.py``)."""

from __future__ import annotations

from datetime import timedelta

from trackcheck.plan.model import Plan
from trackcheck.plan.timing import schedule_signature, stage_interval, stage_timeout

EXPECTED = {"compare": {"with": "expect"}}
PLAN = {
    "name": "timing",
    "key": "id",
    "defaults": {"interval": "30s", "timeout": "10m"},
    "sources": {"s": {"type": "memory", "table": "t"}},
    "expect": [{"id": 1}],
    "stages": [
        {"name": "every", "source": "s", **EXPECTED},
        {"name": "own", "source": "s", "interval": "5s", "timeout": "1m", **EXPECTED},
        {"name": "nightly", "source": "s", "cron": "10 2 * * *", **EXPECTED},
        {"name": "once", "source": "s", "at": "2030-01-01T00:00:00Z", **EXPECTED},
    ],
}


def plan() -> Plan:
    import trackcheck.testing  # noqa: F401 - registers type: memory

    return Plan.model_validate(PLAN)


def test_a_stage_takes_its_own_setting_else_the_plan_default() -> None:
    p = plan()
    every, own = p.stages[0], p.stages[1]
    assert stage_interval(p, every, {}) == timedelta(seconds=30)
    assert stage_interval(p, own, {}) == timedelta(seconds=5)
    assert stage_timeout(p, every, {}) == timedelta(minutes=10)
    assert stage_timeout(p, own, {}) == timedelta(minutes=1)


def test_a_run_override_in_seconds_wins_over_the_plan() -> None:
    p = plan()
    own = p.stages[1]
    assert stage_interval(p, own, {"interval": 0.5}) == timedelta(milliseconds=500)
    assert stage_timeout(p, own, {"timeout": 90}) == timedelta(seconds=90)
    assert stage_timeout(p, own, {"interval": 0.5}) == timedelta(minutes=1), "only what is overridden changes"


def test_runs_share_a_schedule_only_when_they_poll_alike() -> None:
    p = plan()
    every, own, nightly, once = p.stages
    assert schedule_signature(p, every, {}) == "every:30.0"
    assert schedule_signature(p, own, {}) == "every:5.0"
    assert schedule_signature(p, nightly, {}) == "cron:10 2 * * *"
    assert schedule_signature(p, once, {}).startswith("at:2030-01-01T00:00:00")
    # an interval override turns a cron or at stage into an interval one (verify() polling fast)
    assert schedule_signature(p, nightly, {"interval": 1}) == "every:1.0"
    assert schedule_signature(p, once, {"interval": 1}) == "every:1.0"
    assert schedule_signature(p, every, {"timeout": 5}) == schedule_signature(p, every, {})
