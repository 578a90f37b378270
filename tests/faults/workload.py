"""A two-system pipeline (collector → warehouse) on a ``Feed``, and runs whose fate is known in advance.

Every run expects two events; the feed delivers them to the collector, then to the warehouse, each at its
own random moment within ``spread`` seconds, so a run waits, sees one of two, then both. A run's fate
decides what the warehouse receives, hence how the run must end whatever happened to the service:

- ``passes``: everything arrives, right, before the deadline → ``passed`` (a poll after the deadline sees
  complete data and passes too, so time lost to a fault never turns it into a failure);
- ``mismatch``: the warehouse gets ``e2`` as a ``refund`` → ``failed``, "field mismatch";
- ``lost``: the warehouse never gets ``e2`` → ``failed`` at the warehouse's timeout, "timed out".
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.faults.harness import Feed, Served
from tests.faults.invariants import Expected

PLAN_NAME = "faults"
EVENTS = ({"event_id": "e1", "event": "view"}, {"event_id": "e2", "event": "purchase"})

PLAN = """
name: NAME
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 1s, timeout: TIMEOUT, backoff: 1s}
sources:
  collector: {type: http, url: "URL", timeout: 2s}
  warehouse: {type: http, url: "URL", timeout: 2s}
expect:
  - {event_id: e1, event: view}
  - {event_id: e2, event: purchase}
stages:
  - name: collector
    source: collector
    request: {path: /collector}
    records: items
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
  - name: warehouse
    source: warehouse
    request: {path: /warehouse}
    records: items
    where: {test_id: "{test_id}"}
    compare: {with: collector, fields: [event]}
"""


def write_plan(folder: Path, feed: Feed, timeout: float, name: str = PLAN_NAME) -> Path:
    """The plans folder ``trackcheck serve --plans`` loads, holding the pipeline's plan."""
    folder.mkdir(parents=True, exist_ok=True)
    text = PLAN.replace("NAME", name).replace("URL", feed.url).replace("TIMEOUT", f"{timeout:g}s")
    (folder / f"{name}.yaml").write_text(text)
    return folder


@dataclass(frozen=True)
class Fate:
    name: str
    expected: Expected


PASSES = Fate("passes", Expected("passes", frozenset({"passed"})))
MISMATCH = Fate("mismatch", Expected("mismatch", frozenset({"failed"}), "mismatch"))
LOST = Fate("lost", Expected("lost", frozenset({"failed"}), "timed out"))


class Workload:
    """Submits runs and feeds their data; ``expected`` maps each accepted run id to how it must end."""

    def __init__(self, feed: Feed, rng: random.Random, spread: float) -> None:
        self.feed = feed
        self.rng = rng
        self.spread = spread
        self.expected: dict[str, Expected] = {}

    def fates(self, n: int, mismatch: float = 0.15, lost: float = 0.15) -> list[Fate]:
        """``n`` fates, mostly ``passes``, shuffled (at least one of each when n >= 6)."""
        bad = max(1, round(n * mismatch)) if n >= 6 else 0
        gone = max(1, round(n * lost)) if n >= 6 else 0
        fates = [MISMATCH] * bad + [LOST] * gone + [PASSES] * (n - bad - gone)
        self.rng.shuffle(fates)
        return fates

    def submit(self, served: Served, fate: Fate, start: float | None = None, **extra: Any) -> str:
        """Schedule the run's data from ``start`` (default now) on, then submit it (it must be accepted)."""
        answer = self.post(served, fate, start, **extra)
        assert answer.status_code == 202, f"{answer.status_code} {answer.text}"
        run_id: str = answer.json()["id"]
        return run_id

    def post(self, served: Served, fate: Fate, start: float | None = None, **extra: Any) -> httpx.Response:
        """Like ``submit``, but the service may refuse: the answer, the run expected only if accepted."""
        test_id = f"t{uuid.uuid4().hex[:12]}"  # never number-like: see test_poison.py
        self.deliver(test_id, fate, time.monotonic() if start is None else start)
        answer = served.post_run(PLAN_NAME, {"test_id": test_id}, **extra)
        if answer.status_code == 202:
            self.expected[answer.json()["id"]] = fate.expected
        return answer

    def deliver(self, test_id: str, fate: Fate, start: float) -> None:
        collector_done = start
        for record in EVENTS:
            at = start + self.rng.uniform(0, self.spread)
            collector_done = max(collector_done, at)
            self.feed.deliver("collector", {**record, "test_id": test_id}, at)
        for record in EVENTS:
            if fate is LOST and record["event_id"] == "e2":
                continue
            changed = {"event": "refund"} if fate is MISMATCH and record["event_id"] == "e2" else {}
            at = collector_done + self.rng.uniform(0, self.spread)
            self.feed.deliver("warehouse", {**record, **changed, "test_id": test_id}, at)
