"""The state database on every supported backend: SQLite (the default), PostgreSQL and MariaDB.

``trackcheck run --db URL`` migrates the database, stores the run with every stage's evidence and the
snapshots later stages compare with, and ``trackcheck show RUN_ID --db URL`` prints it again from there.
Each PostgreSQL/MariaDB test gets a fresh database of its own (tests/integration/conftest.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

import trackcheck.store.database
from trackcheck.cli import main
from trackcheck.scheduling.config import JOBS_TABLE, SchedulerConfig, build_scheduler

PLAN = """
name: parcels
key: parcel
params: {wave: {required: true}}
sources:
  scans: {type: file, path: "${PARCEL_SCANS}/scans-*.jsonl"}
  ledger: {type: sql, url: "${PARCEL_LEDGER}"}
expect:
  - {parcel: P-100, depot: Leeds, weight_kg: 1.25, fragile: true}
  - {parcel: P-101, depot: York, weight_kg: 12, fragile: false}
stages:
  - name: scanned
    source: scans
    where: {wave: "{wave}"}
    compare: {with: expect}
  - name: booked
    source: ledger
    query: SELECT parcel_id AS parcel, depot, weight_kg, fragile, wave FROM bookings
    where: {wave: "{wave}"}
    compare: {with: scanned, fields: [depot, weight_kg, fragile]}
"""
PARCELS = [
    {"parcel": "P-100", "depot": "Leeds", "weight_kg": 1.25, "fragile": True},
    {"parcel": "P-101", "depot": "York", "weight_kg": 12, "fragile": False},
]
STATE_PASSWORD = "State-Pass-55"


class Depot:
    """The plan, its scan files and SQLite ledger in tmp_path; the state database is the test's choice."""

    def __init__(self, root: Path, state: str) -> None:
        self.root = root
        self.state = state
        (root / "scans").mkdir()
        self.ledger = root / "ledger.db"
        with sqlite3.connect(self.ledger) as db:
            db.execute("CREATE TABLE bookings (parcel_id TEXT, depot TEXT, weight_kg REAL, fragile INT, wave TEXT)")
        self.plan = root / "parcels.yaml"
        self.plan.write_text(PLAN, encoding="utf-8")
        self.env = {**os.environ, "PARCEL_SCANS": str(root / "scans"), "PARCEL_LEDGER": f"sqlite:///{self.ledger}"}

    def deliver(self, wave: str, depot_of_p101: str = "York") -> None:
        with (self.root / "scans" / f"scans-{wave}.jsonl").open("w", encoding="utf-8") as scans:
            for parcel in PARCELS:
                scans.write(json.dumps({**parcel, "wave": wave}) + "\n")
        with sqlite3.connect(self.ledger) as db:
            db.executemany(
                "INSERT INTO bookings VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        p["parcel"],
                        depot_of_p101 if p["parcel"] == "P-101" else p["depot"],
                        p["weight_kg"],
                        p["fragile"],
                        wave,
                    )
                    for p in PARCELS
                ],
            )

    def trackcheck(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The state database URL goes in TRACKCHECK_DB: a password on the command line would show in ps."""
        return subprocess.run(
            [sys.executable, "-m", "trackcheck", *args],
            env={**self.env, "TRACKCHECK_DB": self.state},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def run(self, wave: str) -> subprocess.CompletedProcess[str]:
        return self.trackcheck(
            "run", str(self.plan), "-p", f"wave={wave}", "--interval", "200ms", "--timeout", "15s", "--json"
        )


def side_by_side(*jobs: Callable[[], subprocess.CompletedProcess[str]]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: job(), jobs))


def with_password(url: str) -> str:
    """The URL with a password PostgreSQL's trust authentication ignores (MariaDB's root has none)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    return parsed.set(password=STATE_PASSWORD).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'trackcheck.db'}"  # the folder does not exist yet
    url: str = request.getfixturevalue({"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param])
    return url


def show(depot: Depot, run_id: str) -> tuple[int, str, str]:
    """``trackcheck show`` through click's CliRunner (the run itself went through a real process)."""
    result = CliRunner().invoke(main, ["show", run_id], env={**depot.env, "TRACKCHECK_DB": depot.state})
    return result.exit_code, result.stdout, result.stderr


def test_a_run_is_stored_in_the_state_database_and_shown_from_it(tmp_path: Path, state_url: str) -> None:
    depot = Depot(tmp_path, with_password(state_url))
    depot.deliver("w2", depot_of_p101="Hull")

    ran = depot.run("w2")  # on an empty database: migrates it first

    assert ran.returncode == 1, ran.stderr
    document = json.loads(ran.stdout)
    assert document["status"] == "failed" and document["params"] == {"wave": "w2"}
    scanned, booked = document["stages"]
    assert (scanned["status"], scanned["found"], scanned["attempts"]) == ("passed", 2, 1)
    # the booked stage compared with what the scanned stage read: a snapshot kept in the state database
    assert booked["status"] == "failed"
    assert booked["mismatches"] == [{"key": "P-101", "field": "depot", "expected": "York", "actual": "Hull"}]
    assert STATE_PASSWORD not in ran.stdout + ran.stderr

    code, stdout, stderr = show(depot, document["run_id"])  # also migrates again: must change nothing
    assert code == 0, stderr
    assert json.loads(stdout) == document
    assert STATE_PASSWORD not in stdout + stderr
    code, _, stderr = show(depot, "0123456789abcdef")
    assert code == 2 and "no such run" in stderr

    # every migration is applied, in trackcheck's own tables
    head = ScriptDirectory(str(Path(trackcheck.store.database.__file__).with_name("migrations"))).get_current_head()
    engine = create_engine(state_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM tc_alembic_version")).scalars().all() == [head]
        tables = set(inspect(engine).get_table_names())
        assert {"tc_plans", "tc_runs", "tc_run_stages"} <= tables
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://tc_state:{STATE_PASSWORD}@127.0.0.1:1/trackcheck",
        f"mysql://root:{STATE_PASSWORD}@127.0.0.1:3306/trackcheck",
    ],
    ids=["postgresql-closed-port", "mariadb-wrong-password"],
)
def test_an_unusable_state_database_exits_3_without_its_password(tmp_path: Path, url: str) -> None:
    depot = Depot(tmp_path, url)
    depot.deliver("w1")

    run = depot.run("w1")
    code, stdout, stderr = show(depot, "0123456789abcdef")

    assert run.returncode == 3 and code == 3, run.stderr + stderr
    for output in (run.stdout + run.stderr, stdout + stderr):
        assert "StoreError" in output and "state database" in output
        assert STATE_PASSWORD not in output
        assert "Traceback" not in output


def test_commands_started_at_once_on_a_new_state_database_all_work(tmp_path: Path, state_url: str) -> None:
    """Parallel CI jobs sharing a state database (or the default ./trackcheck.db): the first start must not
    fail. Each backend serialises its migrations its own way (file, advisory and named locks)."""
    depot = Depot(tmp_path, state_url)

    results = side_by_side(*[partial(depot.trackcheck, "show", f"{i:032x}") for i in range(3)])

    assert [r.returncode for r in results] == [2] * 3, [r.stderr for r in results]
    assert all("no such run" in r.stderr for r in results)


def test_schedulers_started_at_once_on_a_new_state_database_all_start(state_url: str) -> None:
    """gunicorn's workers each start a scheduler whose job store creates its table: on a new state database
    they race for it, and a worker whose CREATE TABLE lost failed to boot, stopping the whole service (CI saw
    it on SQLite)."""
    if state_url.startswith("sqlite"):
        Path(make_url(state_url).database or "").parent.mkdir(parents=True)
    engines = [create_engine(state_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))

    def start(engine: Engine) -> bool:
        scheduler = build_scheduler(SchedulerConfig(jobstore="sqlalchemy"), engine)
        barrier.wait(10)
        scheduler.start(paused=True)
        scheduler.shutdown(wait=False)
        return True

    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            assert list(pool.map(start, engines)) == [True] * len(engines)
        assert inspect(engines[0]).has_table(JOBS_TABLE)
    finally:  # each backend's database is this test's own
        for engine in engines:
            engine.dispose()


def test_a_migration_is_committed_before_its_lock_is_released(mariadb_url: str) -> None:
    """MariaDB commits DDL at once but the last version update only at the end: a process that took the lock
    before that commit read the old version and ran the last migration again ("Duplicate column name")."""
    engine = trackcheck.store.database.create_state_engine(mariadb_url)
    said: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: said.append(" ".join(str(args[2]).split()[:3])))
    event.listen(engine, "commit", lambda _connection: said.append("COMMIT"))
    try:
        trackcheck.store.database.migrate(engine)
    finally:
        engine.dispose()

    last_version = max(i for i, line in enumerate(said) if "tc_alembic_version" in line and "SELECT" not in line)
    released = next(i for i, line in enumerate(said) if "RELEASE_LOCK" in line)
    assert "COMMIT" in said[last_version:released], said[last_version:]
