"""kill -9 of the whole service (gunicorn master and workers) in the middle of poll ticks, then a restart.

Runs are submitted in waves, one after each start; each kill waits until a poll tick has begun (its source
request reached the feed) and strikes a few milliseconds later, between the read and the tick's write.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.harness import Feed, Served, scratch_database, sized
from tests.faults.invariants import check, settle
from tests.faults.workload import Workload, write_plan

RUNS = sized(16, 100)
KILLS = sized(3, 10)
TIMEOUT = sized(5.0, 20.0)  # per stage; only `lost` runs wait for it
SPREAD = sized(1.5, 6.0)  # data arrives within this many seconds of the stage before
GRACE = 15.0  # a restart, the poller's first sync and a tick of slack past a deadline


@pytest.mark.timeout(sized(180, 900))
@pytest.mark.parametrize("backend", sized(["sqlite"], ["sqlite", "postgresql"]))
def test_kill_9_during_ticks_loses_nothing(
    backend: str,
    workdir: Path,
    feed: Feed,
    serve: Callable[..., Served],
    rng: random.Random,
    report: Callable[[str], None],
) -> None:
    began = time.monotonic()
    with scratch_database(backend, workdir) as db:
        served = serve(db, write_plan(workdir / "plans", feed, TIMEOUT), workers=2)
        try:
            _kill_and_restart(served, backend, feed, rng, report, began)
        finally:
            served.kill()  # before its database is dropped


def _kill_and_restart(
    served: Served, backend: str, feed: Feed, rng: random.Random, report: Callable[[str], None], began: float
) -> None:
    workload = Workload(feed, rng, SPREAD)
    fates = workload.fates(RUNS)
    waves = [fates[i :: KILLS + 1] for i in range(KILLS + 1)]
    mid_tick = 0
    served.start()
    for wave in waves[:-1]:
        for fate in wave:
            workload.submit(served, fate)
        time.sleep(rng.uniform(0.3, 2.0))
        if feed.wait_for_request(timeout=5):
            mid_tick += 1
            time.sleep(rng.uniform(0, 0.05))
        served.kill()
        time.sleep(rng.uniform(0, 1.0))
        served.start()
    for fate in waves[-1]:
        workload.submit(served, fate)

    settle(served.db, list(workload.expected), GRACE)
    verdict = check(served.db, workload.expected, GRACE)
    title = f"kill -9 x{KILLS} during ticks ({mid_tick} mid-tick, {backend}, 2 workers)"
    line = verdict.line(title, time.monotonic() - began)
    report(line)
    assert verdict.ok, f"{line}\n{verdict.details()}\n--- serve log:\n{served.log_tail()}"
    assert len(workload.expected) == RUNS
