"""``trackcheck worker`` processes, and what the scenarios with several of them check.

A worker runs in a session of its own (``kill`` stops it and whatever it started at once, even when it was
stopped with SIGSTOP), logs to a file in the scenario's folder, and may run inside a network namespace
(``prefix``: ``ip netns exec NAME``). The runs of these scenarios use the two-stage pipeline of
``workload.py``; each must end with exactly one ``passed`` poll per stage, whatever was killed or cut off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.harness import Feed
from tests.faults.workload import EVENTS
from trackcheck.engine import Engine


class WorkerProcess:
    """One ``trackcheck -v worker`` on ``db``, its log ``worker-NAME.log`` in ``folder``."""

    def __init__(
        self,
        name: str,
        db: str,
        folder: Path,
        *,
        config: Path | None = None,
        metrics_port: int | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.metrics_port = metrics_port
        self.log = folder / f"worker-{name}.log"
        command = [*prefix, sys.executable, "-m", "trackcheck", "-v", "worker", "--db", db]
        if config is not None:
            command += ["--config", str(config)]
        if metrics_port is not None:
            command += ["--metrics-port", str(metrics_port)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> None:
        """Until ``needle`` is in the log; AssertionError (with the log's end) if the worker exits first."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.alive, f"worker {self.name} exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"{needle!r} not in {self.name}'s log:\n{self.text()[-3000:]}"
            time.sleep(0.1)

    def metrics(self) -> dict[str, float]:
        """Its /metrics (``--metrics-port``): every sample without labels, and the ``source_type=http`` ones."""
        answer = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        assert answer.status_code == 200
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                if not sample.labels or sample.labels == {"source_type": "http"}:
                    samples[sample.name] = sample.value
        return samples

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it: its exit code once it finished its polls."""
        self.process.terminate()
        return self.process.wait(30)

    def kill(self) -> None:
        """kill -9 of its session (continued first: a stopped process gets its SIGKILL all the same)."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def deliver_all(feed: Feed, test_ids: Sequence[str]) -> None:
    """Every event of these runs in both systems now: each passes at its first poll of each stage."""
    for test_id in test_ids:
        for system in ("collector", "warehouse"):
            for event in EVENTS:
                feed.deliver(system, {**event, "test_id": test_id}, time.monotonic())


def wait_passed(engine: Engine, runs: Sequence[str], timeout: float, logs: str) -> None:
    deadline = time.monotonic() + timeout
    while not all(engine.result(run_id).status == "passed" for run_id in runs):
        assert time.monotonic() < deadline, f"runs still waiting:\n{logs[-4000:]}"
        time.sleep(0.2)


def one_passed_poll_per_stage(engine: Engine, runs: Sequence[str]) -> None:
    """No stage passed twice: what a stale or repeated poll of a former worker would show."""
    for run_id in runs:
        polls = [(p.stage_idx, p.outcome) for p in engine.store.polls(run_id)]
        assert polls.count((0, "passed")) == 1 and polls.count((1, "passed")) == 1, f"run {run_id}: {polls}"


def reads_per_tick(feed: Feed) -> tuple[int, int]:
    """The feed's reads by their ``X-Trackcheck-Poll`` header: none made twice (the same group, epoch, tick,
    attempt and chunk), every one named. Returns how many reads there were and how many (group, tick,
    chunk) were read again under a later attempt: a job retried because its worker died mid-read."""
    assert sum(feed.polls.values()) == sum(feed.requests.values()), "a read without X-Trackcheck-Poll"
    twice = {poll: count for poll, count in feed.polls.items() if count > 1}
    assert not twice, f"read more than once: {twice}"
    attempts: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
    for poll in feed.polls:
        fields = dict(part.split("=", 1) for part in poll.split("; "))
        attempts[(fields["group"], fields["tick"], fields["chunk"])].add(fields["attempt"])
    return sum(feed.polls.values()), sum(1 for tried in attempts.values() if len(tried) > 1)
