"""Poll workers on other machines: each ``trackcheck worker`` in a network namespace of its own.

A machine here is a network namespace (``ip netns``) joined to the host by a veth pair: its processes see
only their own interface and a route to the host. The state database (a throw-away PostgreSQL cluster) and
the source (the feed) listen on an address of the host's that the namespaces reach over their veth, so
nothing a worker does can take a shortcut through 127.0.0.1. What is checked is what a deployment on
several machines relies on: workers on both machines take poll jobs and every run ends with one ``passed``
poll per stage; when the machine that plans is cut off from the network in the middle of a tick (it sends
no FIN: the database must notice by itself that it is gone), the other takes the lease over, plans, and
takes over a poll the cut-off machine held; when the cut-off machine comes back, what it was writing is
refused.

Needs root (``ip netns``), as the machine this project runs on gives.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.faults.harness import Feed, ThrowawayPostgres
from tests.faults.workers import (
    WorkerProcess,
    deliver_all,
    one_passed_poll_per_stage,
    reads_per_tick,
    wait_passed,
)
from tests.faults.workload import PLAN
from trackcheck.engine import Engine, store_plan
from trackcheck.engine.core import RunRequest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

CONFIG = """
[scheduler]
backend = "procrastinate"
workers = 4
heartbeat = "500ms"
stalled_after = "2s"
"""
PLANS = 4


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


class Machine:
    """A network namespace linked to the host: ``address`` is its side, ``link`` the host's interface."""

    def __init__(self, name: str, link: str, address: str) -> None:
        self.name, self.link, self.address = name, link, address
        self.worker: WorkerProcess | None = None

    def start_worker(self, db: str, folder: Path) -> WorkerProcess:
        config = folder / "trackcheck.toml"
        config.write_text(CONFIG)
        self.worker = WorkerProcess(self.name, db, folder, config=config, prefix=("ip", "netns", "exec", self.name))
        return self.worker

    def cut(self, off: bool) -> None:
        """Unplug (or plug back) the machine's cable: its connections stay open and hear nothing."""
        sh("ip", "link", "set", self.link, "down" if off else "up")

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.kill()


@contextmanager
def machines(count: int) -> Iterator[tuple[str, list[Machine]]]:
    """``count`` machines and the host address they all reach (on the host's loopback, routed over each veth)."""
    tag = f"{random.randrange(16**5):05x}"
    net = f"10.{random.randrange(100, 250)}"
    service = f"{net}.0.1"
    made: list[Machine] = []
    sh("ip", "addr", "add", f"{service}/32", "dev", "lo")
    try:
        for i in range(count):
            machine = Machine(f"tc{tag}{i}", f"tch{tag}{i}", f"{net}.{i + 1}.2")
            sh("ip", "netns", "add", machine.name)
            made.append(machine)
            sh("ip", "link", "add", machine.link, "type", "veth", "peer", "name", f"tcn{tag}{i}")
            sh("ip", "link", "set", f"tcn{tag}{i}", "netns", machine.name)
            sh("ip", "addr", "add", f"{net}.{i + 1}.1/24", "dev", machine.link)
            sh("ip", "link", "set", machine.link, "up")
            inside = ("ip", "netns", "exec", machine.name, "ip")
            sh(*inside, "addr", "add", f"{machine.address}/24", "dev", f"tcn{tag}{i}")
            sh(*inside, "link", "set", f"tcn{tag}{i}", "up")
            sh(*inside, "link", "set", "lo", "up")
            sh(*inside, "route", "add", "default", "via", f"{net}.{i + 1}.1")
        yield service, made
    finally:
        for machine in made:
            machine.stop()
            subprocess.run(["ip", "netns", "del", machine.name], check=False, capture_output=True)
            subprocess.run(["ip", "link", "del", machine.link], check=False, capture_output=True)
        subprocess.run(["ip", "addr", "del", f"{service}/32", "dev", "lo"], check=False, capture_output=True)


@pytest.mark.timeout(240)
def test_workers_on_two_machines_share_the_polls_and_one_cut_off_loses_nothing(workdir: Path) -> None:
    with machines(2) as (service, (one, two)):
        cluster = ThrowawayPostgres(listen=f"{service},127.0.0.1", clients=f"{service.rsplit('.', 2)[0]}.0.0/16")
        feed = Feed(host=service).start()
        engine: Engine | None = None
        try:
            cluster.start()
            db = cluster.url
            engine = Engine(db).start()
            plan_ids = [
                store_plan(engine, PLAN.replace("NAME", f"p{i}").replace("URL", feed.url).replace("TIMEOUT", "120s"),
                           f"p{i}.yaml", None)[0]
                for i in range(PLANS)
            ]  # fmt: skip
            first = one.start_worker(db, workdir)  # one first: it takes the lease and plans
            first.wait_for("now runs the polling scheduler", 30)
            second = two.start_worker(db, workdir)
            second.wait_for("running poll jobs", 30)

            test_ids = [f"m-{i}" for i in range(40)]
            deliver_all(feed, test_ids)
            runs = [
                run_id
                for i, plan_id in enumerate(plan_ids)
                for run_id in engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in test_ids[i::PLANS]])
            ]
            wait_passed(engine, runs, 60, first.text() + second.text())
            one_passed_poll_per_stage(engine, runs)
            assert "Starting job" in first.text() and "Starting job" in second.text(), "both machines polled"
            reads, reread = reads_per_tick(feed)  # counted at the source: each tick's chunk read once
            assert reads >= 2 * PLANS and reread == 0, (reads, reread)

            # machine one is cut off in the middle of a poll: machine two takes the job over
            feed.hold()
            held_ids = [f"cut-{i}" for i in range(8)]
            deliver_all(feed, held_ids)
            held = [
                run_id
                for i, plan_id in enumerate(plan_ids)
                for run_id in engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in held_ids[i::PLANS]])
            ]
            assert feed.wait_for_request(timeout=30), "no machine polled"
            one.cut(off=True)  # the planner (it started first and took the lease), perhaps polling too
            feed.release()  # an answer to it is lost on the unplugged cable
            began = time.monotonic()
            wait_passed(engine, held, 45, second.text())
            took = time.monotonic() - began
            one.cut(off=False)
            time.sleep(4)  # machine one goes on with what it was doing, then writes: refused if stale
            one_passed_poll_per_stage(engine, held)
            reads_per_tick(feed)  # nothing read twice under one claim, across both machines
            # the runs' second stage needed a planner: the server ended the silent one's lease session
            assert "now runs the polling scheduler" in second.text()
            assert took < 25, f"machine two finished the runs {took:.1f} s after machine one was cut off"
        finally:
            if engine is not None:
                engine.shutdown()
            for machine in (one, two):
                machine.stop()
            feed.close()
            cluster.destroy()
