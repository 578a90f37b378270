"""A whole pipeline verified the way a user does it: a plan written here, real files, a real SQL warehouse
(SQLite, PostgreSQL and MariaDB), a real HTTP dashboard API, the real CLI in a subprocess and the
``trackcheck.verify`` API in-process.

The pipeline of these tests: a signup service writes NDJSON spool files at the edge, a loader copies the
events into a ``signups`` table of the lake (renaming columns), and a dashboard serves tallies per kind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Numeric, String, Table, create_engine, event, insert

import trackcheck
from tests.integration.http_server import HttpTestServer
from tests.settings import FAST_SETUP, MIN_INTERVAL
from trackcheck import ParamError, PlanError, RunResult
from trackcheck.engine import Engine, store_plan
from trackcheck.foreground import wait_for
from trackcheck.scheduling import Poller, SchedulerConfig
from trackcheck.sources.sql import SqlSource

#: verify()'s polling in these tests: every 200 ms, below a deployment's 1 s floor
POLL: dict[str, Any] = {"interval": "200ms", "min_interval": MIN_INTERVAL}
RUN_KEYS = ["run_id", "plan", "status", "params", "stages"]
STAGE_KEYS = [
    "name",
    "status",
    "attempts",
    "started_at",
    "finished_at",
    "expected",
    "found",
    "missing",
    "unexpected",
    "duplicates",
    "mismatches",
    "violations",
    "counts",
    "warnings",
    "latency",
    "error",
    "error_kind",
    "reason",
]

PLAN = """
name: signup-funnel
description: signups reach the edge spool, then the lake, then the dashboard tallies
key: msg_id
params:
  run_tag: {required: true, description: marks the events of one test}
defaults: {interval: 45s, timeout: 20m}
sources:
  edge_spool: {type: file, path: "${FUNNEL_SPOOL}/edge-*.ndjson", format: jsonl}
  lake_db: {type: sql, url: "${FUNNEL_LAKE_URL}"}
  dash_api: {type: http, url: "${FUNNEL_DASH_URL}"}
expect:
  - {msg_id: m1, kind: signup, tier: free, price: 0}
  - {msg_id: m2, kind: upgrade, tier: pro, price: 19.99}
  - {msg_id: m3, kind: upgrade, tier: team, price: 49.5}
stages:
  - name: edge
    source: edge_spool
    where: {run_tag: "{run_tag}"}
    compare: {with: expect, fields: [kind, tier, price]}
  - name: lake
    source: lake_db
    query: |
      SELECT message_id AS msg_id, kind, plan_tier AS tier, price_usd AS price, tag AS run_tag
      FROM signups
    where: {run_tag: "{run_tag}"}
    compare: {with: edge, fields: [kind, tier, price]}
  - name: dash
    source: dash_api
    request: {method: GET, path: /v2/tallies, params: {tag: "{run_tag}"}}
    records: result.rows
    counts: {by: kind, value: n, with: lake}
"""
EVENTS = [
    {"msg_id": "m1", "kind": "signup", "tier": "free", "price": 0},
    {"msg_id": "m2", "kind": "upgrade", "tier": "pro", "price": 19.99},
    {"msg_id": "m3", "kind": "upgrade", "tier": "team", "price": 49.5},
]
TALLIES = [{"kind": "signup", "n": 1}, {"kind": "upgrade", "n": 2}]

lake_tables = MetaData()
signups = Table(
    "signups",
    lake_tables,
    Column("message_id", String(20)),
    Column("kind", String(20)),
    Column("plan_tier", String(20)),
    Column("price_usd", Numeric(8, 2)),
    Column("tag", String(80)),
)


class Funnel:
    """The pipeline of one test: spool folder, lake database (any SQL backend) and dashboard server."""

    def __init__(self, root: Path, lake_url: str, dashboard: HttpTestServer) -> None:
        self.root = root
        self.spool = root / "spool"
        self.spool.mkdir()
        self.lake_url = lake_url
        self.lake = create_engine(lake_url)
        lake_tables.create_all(self.lake)
        self.dashboard = dashboard
        self.dashboard.reply("/v2/tallies", {"result": {"rows": []}})
        self.plan = root / "funnel.yaml"
        self.plan.write_text(PLAN, encoding="utf-8")
        self.state_url = f"sqlite:///{root / 'state.db'}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "FUNNEL_SPOOL": str(self.spool),
            "FUNNEL_LAKE_URL": self.lake_url,
            "FUNNEL_DASH_URL": self.dashboard.url,
        }

    def reach_edge(self, tag: str, events: list[dict[str, Any]] = EVENTS) -> None:
        with (self.spool / f"edge-{tag}.ndjson").open("a", encoding="utf-8") as spool:
            for one in events:
                spool.write(json.dumps({**one, "run_tag": tag}) + "\n")

    def reach_lake(self, tag: str, events: list[dict[str, Any]] = EVENTS, **changes: Any) -> None:
        """Load ``events`` into the lake; ``changes`` = {msg_id: {field: value}} alters some on the way."""
        rows = []
        for original in events:
            changed = {**original, **changes.get(original["msg_id"], {})}
            rows.append(
                {
                    "message_id": changed["msg_id"],
                    "kind": changed["kind"],
                    "plan_tier": changed["tier"],
                    "price_usd": Decimal(str(changed["price"])),
                    "tag": tag,
                }
            )
        with self.lake.begin() as connection:
            connection.execute(insert(signups), rows)

    def reach_dashboard(self, rows: list[dict[str, Any]] = TALLIES) -> None:
        self.dashboard.reply("/v2/tallies", {"result": {"rows": rows}})

    def close(self) -> None:
        self.lake.dispose()


@pytest.fixture
def dashboard() -> Iterator[HttpTestServer]:
    with HttpTestServer() as server:
        yield server


@pytest.fixture
def funnel(tmp_path: Path, sql_url: str, dashboard: HttpTestServer) -> Iterator[Funnel]:
    pipeline = Funnel(tmp_path, sql_url, dashboard)
    yield pipeline
    pipeline.close()


@pytest.fixture
def sqlite_funnel(tmp_path: Path, sqlite_url: str, dashboard: HttpTestServer) -> Iterator[Funnel]:
    pipeline = Funnel(tmp_path, sqlite_url, dashboard)
    yield pipeline
    pipeline.close()


@pytest.fixture
def funnels(tmp_path: Path, sqlite_url: str, postgres_url: str, mariadb_url: str) -> Iterator[dict[str, Funnel]]:
    """The pipeline three times, its lake on SQLite, PostgreSQL and MariaDB, each with its own dashboard."""
    made: dict[str, Funnel] = {}
    with HttpTestServer() as a, HttpTestServer() as b, HttpTestServer() as c:
        for (backend, url), server in zip(
            {"sqlite": sqlite_url, "postgresql": postgres_url, "mariadb": mariadb_url}.items(), (a, b, c), strict=True
        ):
            (tmp_path / backend).mkdir()
            made[backend] = Funnel(tmp_path / backend, url, server)
        yield made
        for pipeline in made.values():
            pipeline.close()


class Cli:
    """``python -m trackcheck ...`` in a subprocess whose stderr is read line by line while it runs."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trackcheck", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: list[str] = []
        self._seen = threading.Condition()
        self._stdout: list[str] = []
        self._failures: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self._stdout.append(self.process.stdout.read())

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._seen:
                self._lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self._lines.append("")  # end of output
            self._seen.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self._lines:
                    if regex.search(line):
                        return line
                if self._lines and self._lines[-1] == "":
                    raise AssertionError(f"the CLI ended without printing {pattern!r}:\n{''.join(self._lines)}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n{''.join(self._lines)}")
                self._seen.wait(left)

    def after_first_miss(self, stage: str, action: Callable[[], None], delay: float = 0.5) -> None:
        """Run ``action`` ``delay`` seconds after the first poll of ``stage`` found its data incomplete
        (the ``-v`` log has one line per poll), so that the stage is certainly polled more than once."""

        def when_seen() -> None:
            try:
                self.wait_for_line(rf"stage={re.escape(stage)} outcome=waiting")
                time.sleep(delay)
                action()
            except BaseException as exc:
                self._failures.append(exc)

        thread = threading.Thread(target=when_seen, daemon=True)
        thread.start()
        self._threads.append(thread)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        for thread in self._threads:
            thread.join(10)
        if self._failures:
            raise self._failures[0]
        self.elapsed = time.monotonic() - self.started
        return code, "".join(self._stdout), "".join(self._lines)


def run_cli(funnel: Funnel, tag: str, *extra: str, verbose: bool = False) -> Cli:
    args = ["-v"] if verbose else []
    args += ["run", str(funnel.plan), "-p", f"run_tag={tag}", "--db", funnel.state_url, "--json", *extra]
    return Cli(args, funnel.env)


def test_late_data_at_every_stage_is_polled_until_it_arrives_then_passes(funnels: dict[str, Funnel]) -> None:
    """Three runs side by side, one per lake database; each stage's data comes after its first poll missed it."""
    clis = {}
    for backend, funnel in funnels.items():
        cli = clis[backend] = run_cli(funnel, "late-1", "--interval", "200ms", "--timeout", "20s", verbose=True)
        cli.after_first_miss("edge", partial(funnel.reach_edge, "late-1"))
        cli.after_first_miss("lake", partial(funnel.reach_lake, "late-1"))
        cli.after_first_miss("dash", funnel.reach_dashboard)

    for backend, cli in clis.items():
        code, stdout, stderr = cli.finish()

        assert code == 0, (backend, stderr)
        document = json.loads(stdout)
        assert list(document) == RUN_KEYS
        assert document["plan"] == "signup-funnel"
        assert document["status"] == "passed"
        assert document["params"] == {"run_tag": "late-1"}
        assert [stage["name"] for stage in document["stages"]] == ["edge", "lake", "dash"]
        for stage in document["stages"]:
            assert list(stage) == STAGE_KEYS
            assert stage["status"] == "passed", (backend, stage)
            assert stage["attempts"] >= 2, f"{backend}: {stage['name']} passed without waiting for its data: {stage}"
            assert (stage["expected"], stage["found"]) == (3, 3)
            assert stage["error"] is None
            for evidence in ("missing", "unexpected", "duplicates", "mismatches", "violations", "counts"):
                assert stage[evidence] == []
        # a stage starts only after the one before it passed
        moments = [datetime.fromisoformat(s[at]) for s in document["stages"] for at in ("started_at", "finished_at")]
        assert moments == sorted(moments), moments
        # the dashboard was asked about this run's tag, and asked more than once
        tallies = funnels[backend].dashboard.requests_to("/v2/tallies")
        assert len(tallies) >= 2 and {request.param("tag") for request in tallies} == {"late-1"}
        assert f"PASSED signup-funnel run {document['run_id']}" in stderr


def test_one_field_changed_in_the_lake_fails_that_stage_naming_key_field_and_both_values(
    sqlite_funnel: Funnel,
) -> None:
    funnel = sqlite_funnel
    funnel.reach_edge("chg-1")
    funnel.reach_lake("chg-1", m2={"price": 21.99})
    funnel.reach_dashboard()
    report = funnel.root / "reports" / "junit.xml"
    report.parent.mkdir()

    code, stdout, stderr = run_cli(
        funnel, "chg-1", "--interval", "200ms", "--timeout", "20s", "--junit", str(report)
    ).finish()

    assert code == 1, stderr
    document = json.loads(stdout)
    assert document["status"] == "failed"
    edge, lake, dash = document["stages"]
    assert edge["status"] == "passed"
    assert lake["status"] == "failed"
    assert lake["mismatches"] == [{"key": "m2", "field": "price", "expected": 19.99, "actual": 21.99}]
    assert (lake["missing"], lake["unexpected"]) == ([], [])
    assert "m2.price" in lake["reason"] and "19.99" in lake["reason"] and "21.99" in lake["reason"]
    assert dash["status"] == "skipped" and dash["attempts"] == 0
    assert funnel.dashboard.requests_to("/v2/tallies") == []  # a stage after a failure is never read
    assert "mismatch m2.price: expected 19.99, got 21.99" in stderr

    # the JUnit report says the same, one testcase per stage
    suite = ET.parse(report).getroot()
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "3",
        "1",
        "0",
        "1",
    )
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == ["edge", "lake", "dash"]
    assert list(cases["edge"]) == []
    failure = cases["lake"].find("failure")
    assert failure is not None and "m2.price" in (failure.get("message") or "")
    assert json.loads(failure.text or "")["mismatches"] == lake["mismatches"]
    assert cases["dash"].find("skipped") is not None and cases["dash"].find("failure") is None
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties == {"run_id": document["run_id"], "param.run_tag": "chg-1"}


def test_an_event_lost_before_the_lake_fails_at_the_timeout_as_missing(sqlite_funnel: Funnel) -> None:
    funnel = sqlite_funnel
    funnel.reach_edge("lost-1")
    funnel.reach_lake("lost-1", EVENTS[:2])  # m3 never arrives

    cli = run_cli(funnel, "lost-1", "--interval", "200ms", "--timeout", "1s")
    code, stdout, stderr = cli.finish()

    assert code == 1, stderr
    assert cli.elapsed >= 1
    document = json.loads(stdout)
    edge, lake, dash = document["stages"]
    assert edge["status"] == "passed"
    assert lake["status"] == "failed"
    assert lake["missing"] == ["m3"]
    assert (lake["expected"], lake["found"]) == (3, 2)
    assert lake["mismatches"] == [] and lake["unexpected"] == []
    assert "timed out after 1s" in lake["reason"]
    assert lake["attempts"] >= 2  # it kept polling until the timeout
    assert dash["status"] == "skipped"
    assert "missing: m3" in stderr


# -- the Python API ------------------------------------------------------------------------------------


def later(seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


def set_env(monkeypatch: pytest.MonkeyPatch, funnel: Funnel) -> None:
    for name in ("FUNNEL_SPOOL", "FUNNEL_LAKE_URL", "FUNNEL_DASH_URL"):
        monkeypatch.setenv(name, funnel.env[name])


def test_verify_waits_for_late_data_and_returns_the_cli_document_as_an_object(
    sqlite_funnel: Funnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    funnel = sqlite_funnel
    set_env(monkeypatch, funnel)
    later(0.5, lambda: funnel.reach_edge("api-1"))
    later(1.0, lambda: funnel.reach_lake("api-1"))
    later(1.5, funnel.reach_dashboard)
    started = time.monotonic()

    result = trackcheck.verify(funnel.plan, params={"run_tag": "api-1"}, **POLL, timeout="20s")

    assert isinstance(result, RunResult)
    assert result.ok, result.to_dict()
    assert [stage.name for stage in result.stages] == ["edge", "lake", "dash"]
    assert result.stage("lake").found == 3
    document = result.to_dict()
    assert list(document) == RUN_KEYS
    assert all(list(stage) == STAGE_KEYS for stage in document["stages"])
    assert json.loads(json.dumps(document)) == document  # plain JSON, as --json prints it
    assert time.monotonic() - started >= 1.5  # it blocked until the dashboard had the data


def test_verify_expect_argument_replaces_the_plans_events(
    sqlite_funnel: Funnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    funnel = sqlite_funnel
    set_env(monkeypatch, funnel)
    funnel.reach_edge("api-2", EVENTS[:1])
    funnel.reach_lake("api-2", EVENTS[:1])
    funnel.reach_dashboard([{"kind": "signup", "n": 1}])

    result = trackcheck.verify(
        funnel.plan,
        params={"run_tag": "api-2"},
        expect=EVENTS[:1],
        interval="200ms",
        min_interval=MIN_INTERVAL,
        timeout="10s",
    )

    assert result.ok, result.to_dict()
    assert [(stage.expected, stage.found) for stage in result.stages] == [(1, 1), (1, 1), (1, 1)]


def test_verify_reports_wrong_data_in_the_result_with_values_as_json_numbers(
    funnel: Funnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, funnel)
    funnel.reach_edge("api-3")
    funnel.reach_lake("api-3", m1={"kind": "login"}, m3={"price": 49.51})

    failed = trackcheck.verify(funnel.plan, params={"run_tag": "api-3"}, **POLL, timeout="10s")

    assert not failed.ok and failed.status == "failed"
    assert [stage.status for stage in failed.stages] == ["passed", "failed", "skipped"]
    assert failed.stage("lake").mismatches == [  # a NUMERIC column's Decimal is shown as the number it is
        {"key": "m1", "field": "kind", "expected": "signup", "actual": "login"},
        {"key": "m3", "field": "price", "expected": 49.5, "actual": 49.51},
    ]


def test_verify_reports_an_unreadable_source_in_the_result_never_raising(
    sqlite_funnel: Funnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    funnel = sqlite_funnel
    set_env(monkeypatch, funnel)
    funnel.reach_edge("api-4")
    monkeypatch.setenv("FUNNEL_LAKE_URL", "postgresql://funnel:Api-Secret-77@127.0.0.1:1/lake")

    broken = trackcheck.verify(funnel.plan, params={"run_tag": "api-4"}, **POLL, timeout="1s")

    assert not broken.ok and broken.status == "error"
    lake = broken.stage("lake")
    assert lake.status == "error"
    assert "source 'lake_db', stage 'lake'" in (lake.error or "")
    assert "Api-Secret-77" not in json.dumps(broken.to_dict())


def test_verify_raises_plan_and_param_errors_for_invalid_input_only(
    sqlite_funnel: Funnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    funnel = sqlite_funnel
    set_env(monkeypatch, funnel)
    broken_plan = funnel.root / "broken.yaml"
    broken_plan.write_text(PLAN.replace("with: edge", "with: dash"), encoding="utf-8")

    with pytest.raises(PlanError, match=r"stages\[1\] \(lake\)\.compare\.with: 'dash' is a later stage"):
        trackcheck.verify(broken_plan, params={"run_tag": "x"})
    with pytest.raises(PlanError, match="cannot read plan file"):
        trackcheck.verify(funnel.root / "nowhere.yaml", params={"run_tag": "x"})
    with pytest.raises(ParamError, match="run_tag"):
        trackcheck.verify(funnel.plan)
    with pytest.raises(ParamError, match="colour"):
        trackcheck.verify(funnel.plan, params={"run_tag": "x", "colour": "red"})
    with pytest.raises(ParamError, match="msg_id"):
        trackcheck.verify(funnel.plan, params={"run_tag": "x"}, expect=[{"kind": "signup"}])
    with pytest.raises(PlanError, match="interval"):
        trackcheck.verify(funnel.plan, params={"run_tag": "x"}, interval="often")
    with pytest.raises(PlanError, match="timeout"):
        trackcheck.verify(funnel.plan, params={"run_tag": "x"}, timeout=0)


# -- run parameters are data, never SQL ----------------------------------------------------------------


def test_run_parameters_are_bound_so_sql_in_a_tag_matches_only_itself(
    funnel: Funnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, funnel)
    plan = funnel.root / "lake-only.yaml"
    plan.write_text(
        """
name: lake-only
key: msg_id
params: {run_tag: {required: true}}
sources:
  lake: {type: sql, url: "${FUNNEL_LAKE_URL}"}
stages:
  - name: lake
    source: lake
    query: SELECT message_id AS msg_id, kind, tag AS run_tag FROM signups
    where: {run_tag: "{run_tag}"}
    compare: {with: expect, fields: [kind]}
""",
        encoding="utf-8",
    )
    funnel.reach_lake("innocent")
    literal = "x\\'); DROP TABLE signups; --"
    funnel.reach_lake(literal, EVENTS[:1])  # a row whose tag really is that SQL-looking text

    found = trackcheck.verify(plan, params={"run_tag": literal}, expect=EVENTS[:1], **POLL, timeout="10s")
    nothing = trackcheck.verify(
        plan,
        params={"run_tag": "x' OR '1'='1"},
        expect=EVENTS[:1],
        interval="200ms",
        min_interval=MIN_INTERVAL,
        timeout="300ms",
    )

    assert found.ok, found.to_dict()
    assert (found.stage("lake").found, found.stage("lake").unexpected) == (1, [])
    lake = nothing.stage("lake")
    assert (nothing.status, lake.status, lake.error) == ("failed", "failed", None), nothing.to_dict()
    assert (lake.found, lake.missing, lake.unexpected) == (0, ["m1"], [])
    with funnel.lake.connect() as connection:  # nothing was dropped
        assert len(connection.execute(signups.select()).all()) == 4


def test_verify_called_from_several_threads_at_once_gives_each_its_own_result(
    sqlite_funnel: Funnel, monkeypatch: pytest.MonkeyPatch
) -> None:
    funnel = sqlite_funnel
    set_env(monkeypatch, funnel)
    tags = ["par-0", "par-1", "par-2"]
    for tag in tags[:2]:
        funnel.reach_edge(tag)
        funnel.reach_lake(tag)
    funnel.reach_dashboard()
    funnel.reach_edge(tags[2], EVENTS[:2])  # its m3 never arrives
    results: dict[str, RunResult | BaseException] = {}

    def verify_one(tag: str) -> None:
        try:
            results[tag] = trackcheck.verify(funnel.plan, params={"run_tag": tag}, **POLL, timeout="1s")
        except BaseException as exc:
            results[tag] = exc

    threads = [threading.Thread(target=verify_one, args=(tag,), daemon=True) for tag in tags]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert set(results) == set(tags), f"verify() still blocked after 20s: {sorted(set(tags) - set(results))}"
    outcomes = {
        tag: r if isinstance(r, BaseException) else (r.params["run_tag"], r.status, r.stages[0].missing)
        for tag, r in results.items()
    }
    assert outcomes == {
        "par-0": ("par-0", "passed", []),
        "par-1": ("par-1", "passed", []),
        "par-2": ("par-2", "failed", ["m3"]),
    }


# -- batching ------------------------------------------------------------------------------------------

BATCH_PLAN = """
name: lake-batch
key: msg_id
params: {run_tag: {required: true}}
sources:
  lake: {type: sql, url: "%s"}
expect:
  - {msg_id: m1, kind: signup}
  - {msg_id: m2, kind: upgrade}
stages:
  - name: lake
    source: lake
    query: SELECT message_id AS msg_id, kind, tag AS run_tag FROM signups
    where: {run_tag: "{run_tag}"}
    compare: {with: expect, fields: [kind]}
"""


def test_runs_waiting_at_one_sql_stage_are_served_by_one_query_per_tick(
    tmp_path: Path, postgres_url: str, dashboard: HttpTestServer
) -> None:
    funnel = Funnel(tmp_path, postgres_url, dashboard)
    poller = Poller(Engine("sqlite://", setup=FAST_SETUP), SchedulerConfig(jobstore="memory")).start()
    engine = poller.engine
    try:
        plan_id = store_plan(engine, BATCH_PLAN % postgres_url, "batch.yaml", None)[0]
        source = engine.source(plan_id, "lake")
        assert isinstance(source, SqlSource)
        queries: list[dict[str, Any]] = []
        lock = threading.Lock()

        @event.listens_for(source.engine, "before_cursor_execute")
        def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            if "signups" in statement:
                with lock:
                    queries.append(dict(parameters))

        tags = [f"batch-{i:02d}" for i in range(12)]
        runs = [engine.submit(plan_id, {"run_tag": t}, overrides={"interval": 0.3, "timeout": 60}) for t in tags]
        deadline = time.monotonic() + 20
        while any(engine.result(r).stage("lake").attempts == 0 for r in runs):
            assert time.monotonic() < deadline, "the runs were not all polled"
            time.sleep(0.05)
        with lock:
            queries.clear()
        time.sleep(1.5)  # ~5 ticks of 300ms with 12 runs waiting
        with lock:
            waiting_ticks = list(queries)

        assert 1 <= len(waiting_ticks) <= 8, f"{len(waiting_ticks)} queries in 1.5s for 12 runs"
        for parameters in waiting_ticks:  # each query asked for every run's tag at once, as one bound array
            (values,) = parameters.values()
            assert sorted(re.findall(r'"([^"]+)"', values)) == tags

        funnel.reach_lake("someone-else")
        for tag in tags:
            funnel.reach_lake(tag, [EVENTS[0], EVENTS[1]])
        results = [wait_for(engine, r, every=0.05) for r in runs]

        for tag, result in zip(tags, results, strict=True):
            lake = result.stage("lake")
            assert (result.status, lake.found, lake.unexpected) == ("passed", 2, []), (tag, result.to_dict())
            assert result.params == {"run_tag": tag}
    finally:
        poller.shutdown()
        funnel.close()
