"""The state database goes away for a few seconds while the service polls, and comes back.

The database is a PostgreSQL cluster of this test only, stopped with ``pg_ctl stop`` (``fast``: sessions
ended cleanly; ``immediate``: like a crash, recovery at start) and started again on the same port. The
service is not restarted: it must recover by itself (``/healthz`` 200 again, the lease taken again, polls
resumed), and every run must still end as its fate says, including runs submitted after each outage.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Feed, Served, ThrowawayPostgres, sized
from tests.faults.invariants import check, settle
from tests.faults.workload import PASSES, Workload, write_plan

RUNS = sized(12, 60)
RESTARTS = sized(("fast",), ("fast", "immediate", "fast"))
DOWN = sized(3.0, 6.0)  # seconds without a database
TIMEOUT = sized(6.0, 25.0)
SPREAD = sized(2.0, 5.0)
GRACE = 20.0
RECOVERY = 30.0  # how long the service may take to be healthy again


@pytest.fixture
def state_postgres() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres()
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


@pytest.mark.timeout(sized(180, 600))
def test_state_database_restart_mid_polling(
    state_postgres: ThrowawayPostgres,  # before serve: the service is stopped before its database goes
    workdir: Path,
    feed: Feed,
    serve: Callable[..., Served],
    rng: random.Random,
    report: Callable[[str], None],
) -> None:
    began = time.monotonic()
    plans = write_plan(workdir / "plans", feed, TIMEOUT)
    served = serve(state_postgres.url, plans, workers=2).start()
    workload = Workload(feed, rng, SPREAD)
    fates = workload.fates(RUNS)
    waves = [fates[i :: len(RESTARTS) + 1] for i in range(len(RESTARTS) + 1)]
    seen: list[str] = []
    for mode, wave in zip(RESTARTS, waves, strict=False):
        for fate in wave:
            workload.submit(served, fate)
        time.sleep(rng.uniform(0.5, 1.5))
        feed.wait_for_request(timeout=5)  # the database goes away while a tick is under way
        state_postgres.stop(mode)
        down_until = time.monotonic() + DOWN
        health: Counter[str] = Counter()  # what /healthz and POST /api/runs answer meanwhile (503 documented)
        while time.monotonic() < down_until - 0.5:
            health[f"healthz {served.health()}"] += 1
            health[f"POST {workload.post(served, PASSES).status_code}"] += 1
            time.sleep(0.4)
        time.sleep(max(0.0, down_until - time.monotonic()))
        seen.append("while down " + ", ".join(f"{k} x{n}" for k, n in sorted(health.items())))
        state_postgres.start()
        try:
            took = served.wait_healthy(RECOVERY)
        except AssertionError:
            seen.append(f"not healthy {RECOVERY:g} s after the {mode} restart")
            break
        seen.append(f"healthy {took:.1f} s after the {mode} restart")
    else:
        for fate in waves[-1]:
            workload.submit(served, fate)

    settle(served.db, list(workload.expected), GRACE)
    verdict = check(served.db, workload.expected, GRACE)
    title = f"state database restart x{len(RESTARTS)} ({'/'.join(RESTARTS)}, {DOWN:g} s down; {'; '.join(seen)})"
    line = verdict.line(title, time.monotonic() - began)
    report(line)
    assert served.alive, f"the service died with its database:\n{served.log_tail()}"
    assert len(workload.expected) >= RUNS, f"{line}\n--- serve log:\n{served.log_tail()}"
    assert verdict.ok, f"{line}\n{verdict.details()}\n--- serve log:\n{served.log_tail()}"
