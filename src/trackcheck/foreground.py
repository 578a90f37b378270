"""Running one verification in the foreground: ``trackcheck.verify()`` and ``trackcheck run`` share this.

A test suite that emits events can verify them in the same test::

    result = trackcheck.verify("plan.yaml", params={"test_id": tid}, expect=events, interval="1s", timeout="2m")
    assert result.ok, result.to_dict()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from trackcheck.engine.core import Engine, PlanSetup, store_plan
from trackcheck.engine.result import RunResult
from trackcheck.errors import PlanError
from trackcheck.plan.durations import parse_duration
from trackcheck.plan.limits import DEFAULT_LIMITS, PlanLimits, check_interval, check_timeout
from trackcheck.scheduling import Poller, SchedulerConfig

#: verify() keeps its state in memory unless told otherwise: a test suite wants no files left behind
MEMORY_DB = "sqlite://"


def overrides_from(
    interval: str | float | None = None,
    timeout: str | float | None = None,
    *,
    limits: PlanLimits = DEFAULT_LIMITS,
) -> dict[str, float]:
    """``--interval``/``--timeout`` (or verify's arguments, or a run request's) as per-run overrides in
    seconds, held to the same bounds as a plan's (``min_interval``, ``max_timeout``); PlanError naming
    ``interval`` or ``timeout`` otherwise."""
    found: dict[str, float] = {}
    for name, value, check in (("interval", interval, check_interval), ("timeout", timeout, check_timeout)):
        if value is not None:
            try:
                delta = parse_duration(value)
                if delta <= timedelta(0):
                    raise ValueError("must be more than zero")
                check(delta, limits)
            except ValueError as exc:
                raise PlanError(str(exc), field=name) from None
            found[name] = delta.total_seconds()
    return found


def start_run(
    engine: Engine,
    plan_path: str | Path,
    params: Mapping[str, Any],
    expect: list[dict[str, Any]] | None,
    overrides: dict[str, float],
) -> str:
    """Load the plan file, store it as a version, submit a run; PlanError/ParamError on bad input."""
    path = Path(plan_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read plan file: {exc.strerror or exc}", plan=str(plan_path)) from exc
    plan_id, _ = store_plan(engine, text, origin=str(plan_path), base_dir=str(path.resolve().parent))
    return engine.submit(plan_id, dict(params), expect, overrides)


def wait_for(
    engine: Engine, run_id: str, on_update: Callable[[RunResult], None] | None = None, every: float = 0.25
) -> RunResult:
    """Block until the run has ended, calling ``on_update`` with each fresh result."""
    while True:
        result = engine.result(run_id)
        if on_update is not None:
            on_update(result)
        if result.finished:
            return result
        time.sleep(every)


def verify(
    plan: str | Path,
    params: Mapping[str, Any] | None = None,
    expect: list[dict[str, Any]] | None = None,
    interval: str | float | None = None,
    timeout: str | float | None = None,
    db: str = MEMORY_DB,
    min_interval: str | float | None = None,
) -> RunResult:
    """Verify one run of the plan file ``plan`` and return its result once every stage has ended.

    ``min_interval`` lowers (or raises) the shortest poll interval a plan or ``interval`` may ask for (1s
    by default): a test suite polling its own local pipeline may poll faster than a shared service.

    Raises only when verification cannot start: invalid input (PlanError, ParamError), a source driver
    that is not installed (SourceConnectError) or an unusable state database (StoreError). A failed
    verification, a source that cannot be read included, is ``result.ok == False`` with the evidence in
    ``result.stages``. Calls from several threads run side by side.
    """
    limits = DEFAULT_LIMITS
    if min_interval is not None:
        try:
            limits = replace(DEFAULT_LIMITS, min_interval=parse_duration(min_interval))
        except ValueError as exc:
            raise PlanError(str(exc), field="min_interval") from None
    overrides = overrides_from(interval, timeout, limits=limits)
    engine = Engine(db, setup=PlanSetup(limits=limits))
    with Poller(engine, SchedulerConfig(jobstore="memory"), resume=False):
        run_id = start_run(engine, plan, params or {}, expect, overrides)
        return wait_for(engine, run_id)
