"""Poison records: a source returns, for some runs, values holding a NUL character (``"\\u0000"``) or a lone
surrogate (``"\\ud800"``), both valid JSON, that a state database may refuse to store as they are.

Healthy and poisoned runs are polled together (one group, one query, one tick write). Healthy runs must
pass whatever their neighbours hold. A poisoned run must end, never stay ``running`` past its timeout:

- poison in a field that is stored but not compared (``note``) → ``passed`` with the records kept (the
  text stored escaped), or ``error`` with a reason;
- poison in a compared field (``event``) → ``failed`` (the mismatch) or ``error``, with a reason.

The second stage compares with the first one's stored records, so what was stored is read back too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import zip_longest
from pathlib import Path

import pytest

from tests.faults.harness import Feed, Served, scratch_database, sized
from tests.faults.invariants import Expected, check, settle
from tests.faults.workload import EVENTS, PLAN_NAME, write_plan

BACKENDS = ["postgresql", "mariadb", "sqlite"]  # a few seconds each: quick sizes too
HEALTHY, PER_VARIANT = sized((6, 1), (20, 2))
TIMEOUT = sized(6.0, 10.0)
GRACE = 10.0
POISONS = {"NUL": "before\u0000after", "lone surrogate": "\ud800"}
HEALTHY_RUN = Expected("healthy", frozenset({"passed"}))


def variant(kind: str, field: str) -> Expected:
    place = "stored field" if field == "note" else "compared field"
    ends = {"passed", "error"} if field == "note" else {"failed", "error"}
    return Expected(f"{kind} in a {place}", frozenset(ends))


VARIANTS = [(kind, field) for kind in POISONS for field in ("note", "event")]


def deliver(feed: Feed, test_id: str, poison: tuple[str, str] | None) -> None:
    """Both events in both systems at once; with ``poison``, e1 carries it in that field."""
    now = time.monotonic()
    for system in ("collector", "warehouse"):
        for event in EVENTS:
            record = {**event, "test_id": test_id, "note": "fine"}
            if poison is not None and event["event_id"] == "e1":
                kind, field = poison
                record[field] = POISONS[kind] if field == "note" else f"{event['event']}{POISONS[kind]}"
            feed.deliver(system, record, now)


@pytest.mark.timeout(sized(120, 300))
@pytest.mark.parametrize("backend", BACKENDS)
def test_poison_records_do_not_hold_up_their_group(
    backend: str,
    workdir: Path,
    feed: Feed,
    serve: Callable[..., Served],
    report: Callable[[str], None],
) -> None:
    began = time.monotonic()
    with scratch_database(backend, workdir) as db:
        served = serve(db, write_plan(workdir / "plans", feed, TIMEOUT)).start()
        try:
            _poison_group(backend, db, feed, served, report, began)
        finally:
            served.kill()  # before its database is dropped


def _poison_group(
    backend: str, db: str, feed: Feed, served: Served, report: Callable[[str], None], began: float
) -> None:
    expected: dict[str, Expected] = {}
    healthy: list[tuple[str, tuple[str, str] | None]] = [(f"h{i}", None) for i in range(HEALTHY)]
    poisoned = [(f"p{k}-{i}", v) for k, v in enumerate(VARIANTS) for i in range(PER_VARIANT)]
    runs = [run for pair in zip_longest(healthy, poisoned) for run in pair if run is not None]  # alternating
    for name, poison in runs:
        test_id = f"{name}-{time.monotonic_ns()}"
        deliver(feed, test_id, poison)
        run_id = served.submit(PLAN_NAME, {"test_id": test_id})
        expected[run_id] = HEALTHY_RUN if poison is None else variant(*poison)

    settle(db, list(expected), GRACE)
    verdict = check(db, expected, GRACE)
    unkept = []  # a poisoned run that passed must keep what it read, as the records of its stage
    for run_id, want in expected.items():
        if want is not HEALTHY_RUN and served.run(run_id)["status"] == "passed":
            records = served.records(run_id, "collector")
            if len(records) != len(EVENTS):
                unkept.append(f"{run_id} ({want.label}): {records!r}")
    odd = len(expected) - HEALTHY
    line = verdict.line(
        f"poison records on {backend} ({HEALTHY} healthy + {odd} poisoned in one group)",
        time.monotonic() - began,
    )
    report(line)
    assert verdict.ok, f"{line}\n{verdict.details()}\n--- serve log:\n{served.log_tail()}"
    assert not unkept, f"poisoned runs passed without their records kept: {unkept}"


#: a string that reads as a number too large for a decimal: "1e999999999" (a test id, a code, a hash prefix)
NUMBER_LIKE = "1e999999999"
NUMBER_TIMEOUT, NUMBER_GRACE = 3.0, 3.0  # a stuck group shows within seconds


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["run parameter", "stray record"])
def test_number_like_text_does_not_hold_up_its_group(
    where: str, workdir: Path, feed: Feed, serve: Callable[..., Served], report: Callable[[str], None]
) -> None:
    """``where`` values are compared canonically (``"1"`` matches ``1``), so text that reads as a number is
    read as one. ``run parameter``: one run's ``test_id`` is such text (and its data is there); ``stray
    record``: the source holds a record of some other test whose ``test_id`` is. Healthy runs of the group
    must pass; the odd run must end (with a reason unless it passed), never stay running."""
    began = time.monotonic()
    db = f"sqlite:///{workdir / 'state.db'}"
    served = serve(db, write_plan(workdir / "plans", feed, NUMBER_TIMEOUT)).start()
    expected: dict[str, Expected] = {}
    if where == "stray record":
        for system in ("collector", "warehouse"):
            feed.deliver(system, {"event_id": "x1", "event": "view", "test_id": NUMBER_LIKE}, time.monotonic())
    for i in range(HEALTHY):
        if where == "run parameter" and i == HEALTHY // 2:
            deliver(feed, NUMBER_LIKE, None)
            odd = served.submit(PLAN_NAME, {"test_id": NUMBER_LIKE})
            expected[odd] = Expected("number-like test_id", frozenset({"passed", "failed", "error"}))
        test_id = f"h{i}-{time.monotonic_ns()}"
        deliver(feed, test_id, None)
        expected[served.submit(PLAN_NAME, {"test_id": test_id})] = HEALTHY_RUN

    settle(db, list(expected), NUMBER_GRACE)
    verdict = check(db, expected, NUMBER_GRACE)
    line = verdict.line(f"number-like text ({NUMBER_LIKE!r}) as a {where}", time.monotonic() - began)
    report(line)
    assert verdict.ok, f"{line}\n{verdict.details()}\n--- serve log:\n{served.log_tail(30)}"
