"""``trackcheck serve`` as users run it: real gunicorn processes, real HTTP, kill -9 and a restart.

Sources here are HTTP endpoints of a test server, so every source query the deployment makes is counted
on the server side.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.integration.http_server import HttpTestServer
from tests.ports import free_port

PLAN = """
name: served
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 1s, timeout: 2m}
sources:
  a: {type: http, url: "BASE"}
  b: {type: http, url: "BASE"}
expect:
  - {event_id: e1, event: view}
stages:
  - name: first
    source: a
    request: {path: /a}
    records: items
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
  - name: second
    source: b
    request: {path: /b}
    records: items
    where: {test_id: "{test_id}"}
    compare: {with: first, fields: [event]}
"""


class Served:
    """One ``trackcheck serve`` process group; ``kill()`` is kill -9 of all of it."""

    def __init__(self, tmp: Path, plans: Path, workers: int) -> None:
        self.db = f"sqlite:///{tmp / 'state.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"serve-{self.port}.log"
        self.args = [
            sys.executable, "-m", "trackcheck", "serve", "--port", str(self.port), "--db", self.db,
            "--plans", str(plans), "--workers", str(workers),
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Served:
        env = {**os.environ, "TRACKCHECK_API_TOKEN": ""}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited: {self.log.read_text()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not become healthy: {self.log.read_text()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def submit(self, test_id: str) -> str:
        answer = httpx.post(f"{self.url}/api/runs", json={"plan": "served", "params": {"test_id": test_id}}, timeout=10)
        assert answer.status_code == 202, answer.text
        run_id: str = answer.json()["id"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/api/runs/{run_id}", timeout=10)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def wait(self, run_id: str, done: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.run(run_id)
            if done(result):
                return result
            time.sleep(0.2)
        raise AssertionError(f"run never reached the state: {result}")


@pytest.fixture
def source() -> Iterator[HttpTestServer]:
    with HttpTestServer() as server:
        server.reply("/a", {"items": []})
        server.reply("/b", {"items": []})
        yield server


@pytest.fixture
def plans(tmp_path: Path, source: HttpTestServer) -> Path:
    folder = tmp_path / "plans"
    folder.mkdir()
    (folder / "served.yaml").write_text(PLAN.replace("BASE", source.url))
    return folder


def rows(*test_ids: str) -> dict[str, Any]:
    return {"items": [{"event_id": "e1", "event": "view", "test_id": t} for t in test_ids]}


def test_four_workers_poll_each_stage_once_per_tick(tmp_path: Path, plans: Path, source: HttpTestServer) -> None:
    served = Served(tmp_path, plans, workers=4).start()
    try:
        runs = [served.submit(f"t{i}") for i in range(3)]  # three runs waiting at one stage: one group
        for run_id in runs:
            served.wait(run_id, lambda r: r["stages"][0]["attempts"] >= 1)
        first = len(source.requests)
        time.sleep(6)
        window = [r for r in source.requests[first:] if r.path == "/a"]
        # 1s interval over 6 s: about six ticks, one query each, never a second query in the same tick
        assert 4 <= len(window) <= 8, len(window)
        gaps = [b - a for a, b in zip(_times(source, first), _times(source, first)[1:], strict=False)]
        assert min(gaps) > 0.5, f"two polls of one stage within one tick: {gaps}"
        attempts = [served.run(r)["stages"][0]["attempts"] for r in runs]
        assert max(attempts) - min(attempts) <= 1, "the runs of a group are polled together"
    finally:
        served.stop()


def _times(source: HttpTestServer, start: int) -> list[float]:
    return [r.received_at for r in source.requests[start:] if r.path == "/a"]


def test_kill_9_mid_run_loses_nothing_and_the_run_ends_after_restart(
    tmp_path: Path, plans: Path, source: HttpTestServer
) -> None:
    source.reply("/a", rows("k1"))
    served = Served(tmp_path, plans, workers=2).start()
    try:
        run_id = served.submit("k1")
        served.wait(run_id, lambda r: r["stages"][1]["attempts"] >= 1)  # first passed, second waiting
        served.kill()
        polls_of_first = _polls(served.db, run_id, 0)
        requests_to_a = len([r for r in source.requests if r.path == "/a"])
        source.reply("/b", rows("k1"))  # the data arrives while the service is down
        served.start()
        result = served.wait(run_id, lambda r: r["status"] != "running")
        assert result["status"] == "passed", result
        assert [s["status"] for s in result["stages"]] == ["passed", "passed"]
        assert _polls(served.db, run_id, 0) == polls_of_first, "a stage that passed was polled again"
        assert len([r for r in source.requests if r.path == "/a"]) == requests_to_a
    finally:
        served.stop()


def _polls(db: str, run_id: str, stage: int) -> int:
    engine = create_engine(db)
    try:
        with engine.connect() as connection:
            count = connection.execute(
                text("SELECT count(*) FROM tc_polls WHERE run_id = :r AND stage_idx = :s"), {"r": run_id, "s": stage}
            ).scalar()
        return int(count or 0)
    finally:
        engine.dispose()


def test_when_the_polling_worker_dies_another_takes_over(tmp_path: Path, plans: Path, source: HttpTestServer) -> None:
    served = Served(tmp_path, plans, workers=3).start()
    try:
        run_id = served.submit("f1")  # its data never arrives: the stage keeps polling
        served.wait(run_id, lambda r: r["stages"][0]["attempts"] >= 1)
        poller = _lease_holder(tmp_path / "state.db.lock")
        os.kill(poller, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 30  # a standby takes the lease within seconds; the machine may be busy
        after: list[float] = []
        while len(after) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
            after = [r.received_at for r in source.requests if r.path == "/a" and r.received_at > killed_at]
        assert len(after) >= 4, f"polling did not resume after the poller died: {len(after)} polls in 30 s"
        assert min(b - a for a, b in itertools.pairwise(after)) > 0.5, "two pollers at once"
        assert _lease_holder(tmp_path / "state.db.lock") != poller
        assert httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200
    finally:
        served.stop()


def _lease_holder(lock_file: Path) -> int:
    """The pid holding the SQLite lease, from the kernel's lock table (the lease is a flock on the file)."""
    inode = lock_file.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and fields[-3].endswith(f":{inode}"):
            return int(fields[-4])
    raise AssertionError(f"nobody holds the lease on {lock_file}")
