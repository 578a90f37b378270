"""The HTTP source stops answering for a while (nothing listening, HTTP 500s, requests that hang past the
source's timeout), then comes back.

Three kinds of runs share one group (same plan, stage and schedule):

- ``waiting``: submitted before the outage, their data arrives while the source is down → they go on
  polling and pass once it is back;
- ``during``: submitted while the source is down (their first poll fails) → they pass once it is back;
- ``expired``: submitted as each kind of failure starts, with a per-run ``timeout`` shorter than it, their
  data arriving only after the outage → ``error``, the reason naming what the source did ("could not
  connect", "HTTP 500", "at the timeout"); never ``failed`` nor ``passed`` (the data they would pass with
  comes after their deadline), never stuck.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.faults.harness import Feed, Served, sized
from tests.faults.invariants import Expected, as_utc, check, reader, settle
from tests.faults.workload import PASSES, Fate, Workload, write_plan

#: each outage is a list of (mode, seconds), played in a row; the source recovers after each outage
OUTAGES = sized(
    [[("refused", 3.5), ("http500", 3.5), ("hang", 3.5)]],
    [[("refused", 8.0)], [("http500", 8.0)], [("hang", 8.0)]],
)
WAITING, DURING, EXPIRED = sized((6, 1, 2), (30, 10, 10))  # per outage; DURING and EXPIRED per phase
EXPIRE_AFTER = sized(2.0, 4.0)  # the expired runs' timeout: well inside one phase
TIMEOUT = 40.0  # everybody else's, longer than any outage
SPREAD = 2.0
GRACE = 15.0
RESUMED_WITHIN = 15.0  # seconds after the source is back, every waiting run has passed

#: an expired run ends ``error``, its reason naming the timeout and what the source did
EXPIRED_FATES = {
    mode: Fate(f"expired ({mode})", Expected(f"expired ({mode})", frozenset({"error"}), says))
    for mode, says in (("refused", "could not connect"), ("http500", "HTTP 500"), ("hang", "at the timeout"))
}


@pytest.mark.timeout(sized(180, 600))
def test_source_down_then_back(
    workdir: Path,
    feed: Feed,
    serve: Callable[..., Served],
    rng: random.Random,
    report: Callable[[str], None],
) -> None:
    began = time.monotonic()
    served = serve(f"sqlite:///{workdir / 'state.db'}", write_plan(workdir / "plans", feed, TIMEOUT)).start()
    workload = Workload(feed, rng, SPREAD)
    resumed: list[tuple[datetime, list[str]]] = []  # when the source came back, and who waited for it
    for outage in OUTAGES:
        waiting = [workload.submit(served, PASSES) for _ in range(WAITING)]
        time.sleep(1.5)  # they are polled and wait for their data, which comes while the source is down
        outage_end = time.monotonic() + sum(seconds for _, seconds in outage)
        for mode, seconds in outage:
            feed.fail(mode)
            phase_end = time.monotonic() + seconds
            for _ in range(EXPIRED):  # their data comes after the outage: too late
                workload.submit(served, EXPIRED_FATES[mode], start=outage_end + 0.5, timeout=f"{EXPIRE_AFTER:g}s")
            waiting += [workload.submit(served, PASSES) for _ in range(DURING)]
            time.sleep(max(0.0, phase_end - time.monotonic()))
        feed.recover()
        resumed.append((datetime.now(UTC), waiting))

    settle(served.db, list(workload.expected), GRACE)
    verdict = check(served.db, workload.expected, GRACE)
    lags = _resumed_after(served.db, resumed)
    modes = "; ".join(", ".join(f"{m} {s:g} s" for m, s in outage) for outage in OUTAGES)
    title = f"source down ({modes}; waiting runs passed ≤{max(lags):.1f} s after it came back)"
    line = verdict.line(title, time.monotonic() - began)
    report(line)
    assert verdict.ok, f"{line}\n{verdict.details()}\n--- serve log:\n{served.log_tail()}"
    assert max(lags) < RESUMED_WITHIN, f"{line}: polling resumed too slowly after the source came back"


def _resumed_after(db_url: str, resumed: list[tuple[datetime, list[str]]]) -> list[float]:
    """Per outage: seconds from the source's return to the last of its waiting runs passing (inf if one
    never ended)."""
    engine = reader(db_url)
    lags = []
    try:
        with engine.connect() as connection:
            for back, run_ids in resumed:
                ends = [
                    as_utc(connection.execute(text("SELECT finished_at FROM tc_runs WHERE id = :i"), {"i": i}).scalar())
                    for i in run_ids
                ]
                done = [end for end in ends if end is not None]
                lags.append(max((e - back).total_seconds() for e in done) if len(done) == len(ends) else math.inf)
    finally:
        engine.dispose()
    return lags
