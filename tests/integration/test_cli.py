"""The ``trackcheck`` command as CI pipelines see it: a subprocess, its exit code, stdout and stderr.

Exit codes (README): 0 every stage passed, 1 verification failed, 2 invalid plan, parameters or usage,
3 a source could not be read, 130 interrupted. Plans and data are written here, in each test's tmp_path.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.integration.http_server import HttpTestServer
from trackcheck.cli import main

PLAN = """
name: orders-cli
key: [shop, order_no]
params:
  batch: {required: true}
  region: {default: eu}
defaults: {interval: 45s, timeout: 20m}
sources:
  inbox: {type: file, path: "${ORDERS_INBOX}/*.jsonl"}
  wh: {type: sql, url: "${ORDERS_WH_URL}"}
expect:
  - {shop: north, order_no: 1, status: paid, total: 12.5}
  - {shop: north, order_no: 2, status: paid, total: 7}
  - {shop: south, order_no: 1, status: refunded, total: 3.25}
stages:
  - name: inbox
    source: inbox
    where: {batch: "{batch}"}
    compare: {with: expect, fields: [status, total]}
  - name: warehouse
    source: wh
    query: SELECT shop, order_no, status, total, batch FROM orders
    where: {batch: "{batch}"}
    compare: {with: inbox, fields: [status, total], tolerance: {total: 0.01}}
"""
ORDERS = [
    {"shop": "north", "order_no": 1, "status": "paid", "total": 12.5},
    {"shop": "north", "order_no": 2, "status": "paid", "total": 7},
    {"shop": "south", "order_no": 1, "status": "refunded", "total": 3.25},
]
PASSWORD = "Zebra%2Fpw-731"  # as written in a URL; the server would be sent "Zebra/pw-731"
SECRETS = (PASSWORD, "Zebra/pw-731", "Zebra")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.stdout)
        return parsed

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Workspace:
    """A plan file, its inbox folder and SQLite warehouse, and a state database, all in tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.inbox.mkdir()
        self.warehouse = root / "wh.db"
        with sqlite3.connect(self.warehouse) as db:
            db.execute("CREATE TABLE orders (shop TEXT, order_no INTEGER, status TEXT, total REAL, batch TEXT)")
        self.plan = self.write_plan("orders.yaml", PLAN)
        self.state = f"sqlite:///{root / 'state.db'}"
        self.env = {**os.environ, "ORDERS_INBOX": str(self.inbox), "ORDERS_WH_URL": f"sqlite:///{self.warehouse}"}

    def write_plan(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path

    def deliver(self, batch: str, orders: list[dict[str, Any]] = ORDERS, warehouse: bool = True) -> None:
        with (self.inbox / f"{batch}.jsonl").open("a", encoding="utf-8") as inbox:
            for order in orders:
                inbox.write(json.dumps({**order, "batch": batch}) + "\n")
        if warehouse:
            with sqlite3.connect(self.warehouse) as db:
                db.executemany(
                    "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                    [(o["shop"], o["order_no"], o["status"], o["total"], batch) for o in orders],
                )

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "trackcheck", *args]

    def trackcheck(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Outcome:
        started = time.monotonic()
        done = subprocess.run(
            self.command(*args), env=env or self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    def run(self, *args: str, env: dict[str, str] | None = None) -> Outcome:
        return self.trackcheck("run", str(self.plan), "--db", self.state, *args, env=env)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


FAST = ("--interval", "200ms", "--timeout", "10s")


def run_all(jobs: dict[Any, Callable[[], Outcome]]) -> dict[Any, Outcome]:
    """Run independent CLI invocations side by side: each is a whole Python start-up, mostly CPU or waiting."""
    with ThreadPoolExecutor(4) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Workspace, Outcome]]:
    """Commands whose data is in place from the start, run side by side (each in a workspace of its own)."""
    names = ("valid", "ok", "expect", "bad", "garbled")
    spaces = {name: Workspace(tmp_path_factory.mktemp(name)) for name in names}
    spaces["ok"].deliver("b-ok")
    (spaces["ok"].root / "out").mkdir()
    spaces["expect"].deliver("b-exp", ORDERS[:1])
    (spaces["expect"].root / "e.jsonl").write_text(json.dumps(ORDERS[0]) + "\n\n", encoding="utf-8")
    spaces["bad"].deliver("b-bad", [{**ORDERS[0], "status": "void"}, *ORDERS[1:]])
    # tracking data holds anything: an order from a shop whose name carries a control character
    spaces["garbled"].deliver("b-gb", [*ORDERS, {**ORDERS[0], "shop": "we\x02st\x1b[0m"}], warehouse=False)
    jobs = {
        "valid": partial(spaces["valid"].trackcheck, "validate", str(spaces["valid"].plan)),
        "ok": partial(
            spaces["ok"].run, "-p", "batch=b-ok", *FAST, "--json", "--junit", str(spaces["ok"].root / "out" / "r.xml")
        ),
        "expect": partial(
            spaces["expect"].run,
            "-p",
            "batch=b-exp",
            *FAST,
            "--json",
            "--expect",
            str(spaces["expect"].root / "e.jsonl"),
        ),
        "bad": partial(spaces["bad"].run, "-p", "batch=b-bad", *FAST),
        "garbled": partial(
            spaces["garbled"].run, "-p", "batch=b-gb", *FAST, "--junit", str(spaces["garbled"].root / "r.xml")
        ),
    }
    return {name: (spaces[name], outcome) for name, outcome in run_all(jobs).items()}


def test_validate_a_good_plan_exits_0_naming_its_stages(quick: dict[str, tuple[Workspace, Outcome]]) -> None:
    ws, result = quick["valid"]

    assert result.code == 0, result.stderr
    assert f"{ws.plan}: plan 'orders-cli' is valid (2 stages: inbox → warehouse)" in result.stdout


def test_validate_counts_one_stage_in_the_singular(ws: Workspace) -> None:
    plan = ws.write_plan("inbox-only.yaml", PLAN[: PLAN.index("  - name: warehouse")])

    result = in_process(ws, "validate", str(plan))
    assert result.code == 0, result.output
    assert f"{plan}: plan 'orders-cli' is valid (1 stage: inbox)" in result.stdout


def test_a_consistent_run_exits_0_with_progress_lines_and_a_clean_junit_report(
    quick: dict[str, tuple[Workspace, Outcome]],
) -> None:
    ws, result = quick["ok"]

    assert result.code == 0, result.stderr
    document = result.document
    assert document["status"] == "passed"
    assert document["params"] == {"batch": "b-ok", "region": "eu"}  # the default is filled in
    assert [(s["name"], s["status"], s["found"]) for s in document["stages"]] == [
        ("inbox", "passed", 3),
        ("warehouse", "passed", 3),
    ]
    assert "inbox: passed (poll 1, found 3/3)" in result.stderr
    assert "warehouse: passed (poll 1, found 3/3)" in result.stderr
    assert f"PASSED orders-cli run {document['run_id']}" in result.stderr

    suite = ET.parse(ws.root / "out" / "r.xml").getroot()
    assert (suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("errors")) == (
        "orders-cli",
        "2",
        "0",
        "0",
    )
    cases = list(suite.iter("testcase"))
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("orders-cli", "inbox"),
        ("orders-cli", "warehouse"),
    ]
    assert all(len(case) == 0 for case in cases)  # no failure, error or skipped element


def test_expected_events_from_a_jsonl_file_replace_the_plans(quick: dict[str, tuple[Workspace, Outcome]]) -> None:
    _, result = quick["expect"]

    assert result.code == 0, result.stderr
    assert [(s["expected"], s["found"]) for s in result.document["stages"]] == [(1, 1), (1, 1)]


def test_a_mismatch_on_a_composite_key_exits_1_and_later_stages_are_skipped_not_due(
    quick: dict[str, tuple[Workspace, Outcome]],
) -> None:
    _, result = quick["bad"]

    assert result.code == 1
    assert "inbox: failed (poll 1, found 3/3)" in result.stderr
    assert "warehouse: skipped - an earlier stage did not pass" in result.stderr
    assert "mismatch {'shop': 'north', 'order_no': 1}.status: expected 'paid', got 'void'" in result.stderr


def test_the_junit_report_stays_valid_xml_when_the_data_holds_control_characters(
    quick: dict[str, tuple[Workspace, Outcome]],
) -> None:
    ws, result = quick["garbled"]

    assert result.code == 1, result.stderr
    suite = ET.parse(ws.root / "r.xml").getroot()  # a CI server must be able to read it
    failure = suite.find("testcase[@name='inbox']/failure")
    assert failure is not None
    assert "unexpected event: (shop=we\\x02st\\x1b[0m, order_no=1)" in (failure.get("message") or "")
    assert json.loads(failure.text or "")["unexpected"] == [{"shop": "we\x02st\x1b[0m", "order_no": 1}]


# -- invalid input: exit 2, nothing run --------------------------------------------------------------


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return edit


BROKEN: dict[str, tuple[Callable[[str], str], list[str]]] = {
    "unknown source": (
        _replace("    source: wh\n", "    source: whouse\n"),
        ["stages[1] (warehouse).source", "unknown source 'whouse'", "sources: inbox, wh"],
    ),
    "compares with a later stage": (
        _replace("compare: {with: expect", "compare: {with: warehouse"),
        ["stages[0] (inbox).compare.with", "'warehouse' is a later stage"],
    ),
    "compares with no stage": (
        _replace("compare: {with: inbox", "compare: {with: inbx"),
        ["stages[1] (warehouse).compare.with", "'inbx' is not a stage"],
    ),
    "bad stage duration": (
        _replace(
            '    where: {batch: "{batch}"}\n    compare: {with: inbox',
            '    timeout: 10 minutes\n    where: {batch: "{batch}"}\n    compare: {with: inbox',
        ),
        ["stage 'warehouse'", "stages[1] (warehouse).timeout", "'10 minutes' is not a duration"],
    ),
    "bad default duration": (
        _replace("interval: 45s", "interval: 45 secs"),
        ["defaults.interval", "'45 secs' is not a duration"],
    ),
    "unknown stage key": (
        _replace("    query: SELECT", "    qeury: SELECT"),
        ["stage 'warehouse'", "stages[1] (warehouse).qeury", "unknown key"],
    ),
    "unknown source type": (
        _replace("type: sql", "type: snowflake"),
        ["sources.wh.type", "unknown source type 'snowflake'"],
    ),
    "undeclared run parameter": (
        _replace(
            'where: {batch: "{batch}"}\n    compare: {with: expect',
            'where: {batch: "{bacth}"}\n    compare: {with: expect',
        ),
        ["stages[0] (inbox)", "{bacth}", "'params' does not declare"],
    ),
    "missing env variable in a source": (
        _replace("${ORDERS_WH_URL}", "${ORDERS_WH_URL_UNSET}"),
        ["sources.wh.url", "${ORDERS_WH_URL_UNSET} is not set"],
    ),
    "missing env variable in a stage": (
        _replace("FROM orders", "FROM ${ORDERS_TABLE_UNSET}"),
        ["stages[1] (warehouse).query", "${ORDERS_TABLE_UNSET} is not set"],
    ),
}


def in_process(ws: Workspace, *args: str) -> Outcome:
    """The same command through click's CliRunner: no Python start-up, for the long lists of messages."""
    started = time.monotonic()
    result = CliRunner().invoke(main, list(args), env=ws.env)
    return Outcome(result.exit_code, result.stdout, result.stderr, time.monotonic() - started)


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_plan_exits_2_naming_plan_stage_and_field(ws: Workspace, case: str) -> None:
    edit, needles = BROKEN[case]
    plan = str(ws.write_plan("broken.yaml", edit(PLAN)))

    for result in (in_process(ws, "validate", plan), in_process(ws, "run", plan, "-p", "batch=b1", "--db", ws.state)):
        assert result.code == 2, result.output
        assert result.stdout == ""
        assert result.stderr.startswith("error: PlanError: plan 'orders-cli'"), result.stderr
        for needle in needles:
            assert needle in result.stderr, result.stderr


INVALID_RUNS: dict[str, tuple[list[str], list[str]]] = {
    "missing-param": ([], ["ParamError", "parameter 'batch'", "required run parameter is missing"]),
    "unknown-param": (["-p", "batch=b1", "-p", "regoin=us"], ["parameter 'regoin'", "declared: batch, region"]),
    "param-syntax": (["-p", "batch"], ["-p/--param", "'batch' is not NAME=VALUE"]),
    "bad-interval": (["-p", "batch=b1", "--interval", "soon"], ["interval", "'soon' is not a duration"]),
    "zero-timeout": (["-p", "batch=b1", "--timeout", "0s"], ["timeout", "must be more than zero"]),
    "no-expect-file": (["-p", "batch=b1", "--expect", "no-such-events.json"], ["--expect", "no-such-events.json"]),
    "expect-without-key": (["-p", "batch=b1", "--expect", "{keyless}"], ["parameter 'expect'", "'order_no'"]),
    "bad-option": (["-p", "batch=b1", "--colour"], ["No such option", "--colour"]),
}


@pytest.mark.parametrize("case", list(INVALID_RUNS))
def test_invalid_run_input_exits_2_naming_what_is_wrong(ws: Workspace, case: str) -> None:
    args, needles = INVALID_RUNS[case]
    keyless = ws.root / "keyless.json"
    keyless.write_text(json.dumps([{"shop": "north", "status": "paid"}]), encoding="utf-8")
    args = [str(keyless) if arg == "{keyless}" else arg for arg in args]

    result = in_process(ws, "run", str(ws.plan), "--db", ws.state, *args)

    assert result.code == 2, result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_a_missing_plan_file_exits_2(ws: Workspace) -> None:
    result = in_process(ws, "run", str(ws.root / "nope.yaml"), "-p", "batch=1", "--db", ws.state)

    assert result.code == 2
    assert "nope.yaml" in result.stderr and "cannot read plan file" in result.stderr


def test_invalid_input_exits_2_from_a_real_process(ws: Workspace) -> None:
    """The contract of the lists above as a CI job sees it: the exit status of the process."""
    two = ws.write_plan("two.yaml", PLAN.replace("key: [shop, order_no]", "key: []"))
    outcomes = run_all(
        {
            "validate": partial(ws.trackcheck, "validate", str(ws.plan), str(two)),
            "missing-param": partial(ws.trackcheck, "run", str(ws.plan), "--db", ws.state),
            "unknown-run": partial(ws.trackcheck, "show", "0123456789abcdef", "--db", f"{ws.state}-2"),
        }
    )

    assert {case: result.code for case, result in outcomes.items()} == dict.fromkeys(outcomes, 2)
    validate = outcomes["validate"]  # each good plan is reported, then it stops at the first invalid one
    assert f"{ws.plan}: plan 'orders-cli' is valid" in validate.stdout
    assert "error: PlanError: plan 'orders-cli': key" in validate.stderr
    assert "parameter 'batch': required run parameter is missing" in outcomes["missing-param"].stderr
    assert "run '0123456789abcdef'" in outcomes["unknown-run"].stderr
    assert "no such run" in outcomes["unknown-run"].stderr
    for result in outcomes.values():
        assert "Traceback" not in result.stderr


# -- unreadable sources: exit 3, never a password ----------------------------------------------------

#: what each ends with: a permanent error (it cannot fix itself) at once, a transient one at the timeout
PERMANENT = {"postgresql-no-such-database", "mariadb-wrong-password"}
UNREADABLE = {
    "postgresql-closed-port": f"postgresql://orders_ro:{PASSWORD}@127.0.0.1:1/orders",
    "postgresql-no-such-database": f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/tc_no_such_db_4711",
    "mariadb-wrong-password": f"mysql://root:{PASSWORD}@127.0.0.1:3306/mysql",
    "sqlite-missing-file": "sqlite:///{root}/not-there.db",
}


@pytest.fixture(scope="module")
def unreadable_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Workspace, Outcome]]:
    """A run per unreadable warehouse, with -vv debug logging, --json and --junit."""
    jobs: dict[Any, Callable[[], Outcome]] = {}
    spaces: dict[str, Workspace] = {}
    for case, url in UNREADABLE.items():
        ws = spaces[case] = Workspace(tmp_path_factory.mktemp(case))
        ws.deliver("b-err", warehouse=False)
        env = {**ws.env, "ORDERS_WH_URL": url.format(root=ws.root)}
        args = ["-vv", "run", str(ws.plan), "--db", ws.state, "-p", "batch=b-err", "--interval", "200ms"]
        args += ["--timeout", "1s", "--json", "--junit", str(ws.root / "report.xml")]
        jobs[case] = partial(ws.trackcheck, *args, env=env)
    return {case: (spaces[case], outcome) for case, outcome in run_all(jobs).items()}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_source_exits_3_naming_source_and_stage_never_the_password(
    unreadable_outcomes: dict[str, tuple[Workspace, Outcome]], case: str
) -> None:
    ws, result = unreadable_outcomes[case]

    assert result.code == 3, result.output
    document = result.document
    assert document["status"] == "error"
    inbox, warehouse = document["stages"]
    assert inbox["status"] == "passed"
    assert warehouse["status"] == "error"
    assert "source 'wh'" in warehouse["error"] and "stage 'warehouse'" in warehouse["error"]
    if case in PERMANENT:
        assert warehouse["error_kind"] == "permanent" and warehouse["attempts"] == 1
        assert "permanent source error, not retried" in warehouse["reason"]
    else:
        assert warehouse["error_kind"] == "transient"
        assert "still failing at the timeout (1s)" in warehouse["reason"]
    assert "source 'wh', stage 'warehouse'" in result.stderr
    assert "DEBUG" in result.stderr  # -vv really logged
    junit = (ws.root / "report.xml").read_text(encoding="utf-8")
    error = ET.fromstring(junit).find("testcase[@name='warehouse']/error")
    assert error is not None and "source 'wh'" in (error.get("message") or "")
    for secret in SECRETS:
        assert secret not in result.output, f"{secret!r} leaked:\n{result.output}"
        assert secret not in junit
    assert not (ws.root / "not-there.db").exists()  # reading never creates an empty database


HTTP_PLAN = """
name: bi-counts
key: order_no
params: {batch: {required: true}}
sources:
  bi: {type: http, url: "${BI_URL}", headers: {X-Api-Key: "${BI_TOKEN}"}}
expect: [{order_no: 1, status: paid}]
stages:
  - name: bi
    source: bi
    request: {path: /orders, params: {batch: "{batch}", api_key: "${BI_TOKEN}"}}
    records: data
    compare: {with: expect}
"""


def test_verbose_logs_never_show_the_credentials_of_an_http_source(ws: Workspace) -> None:
    plan = ws.write_plan("bi.yaml", HTTP_PLAN)
    with HttpTestServer() as bi:
        bi.reply("/orders", {"data": [{"order_no": 1, "status": "paid"}]}, headers={"Set-Cookie": "sid=Zebra-cookie"})
        env = {**ws.env, "BI_URL": bi.url.replace("//", "//reader:Zebra-pass@"), "BI_TOKEN": "Zebra-token-1"}

        result = ws.trackcheck("-vv", "run", str(plan), "-p", "batch=b1", "--db", ws.state, *FAST, env=env)

        request = bi.requests_to("/orders")[0]
    assert result.code == 0, result.stderr
    assert "DEBUG" in result.stderr and "stage=bi outcome=passed" in result.stderr
    # the credentials were sent ...
    assert request.param("api_key") == "Zebra-token-1"
    assert request.headers["x-api-key"] == "Zebra-token-1"
    assert request.headers["authorization"].startswith("Basic ")  # reader:Zebra-pass
    # ... and never written to the log (URL password, token in the query string, cookie)
    assert "Zebra" not in result.output, [line for line in result.output.splitlines() if "Zebra" in line]


# -- interrupted -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_a_ci_cancel_exits_130_with_the_run_stored_cancelled_and_reported(
    ws: Workspace, signum: signal.Signals
) -> None:
    """SIGTERM is what a CI system sends when a job is cancelled: the reports must still be written."""
    junit = ws.root / "report.xml"
    process = subprocess.Popen(
        ws.command(
            "-v", "run", str(ws.plan), "--db", ws.state, "-p", "batch=b-int", "--json", "--junit", str(junit), *FAST
        ),
        env=ws.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:  # wait until the run is really being polled
        if "stage=inbox outcome=waiting" in line:
            break
    else:
        raise AssertionError(f"the run never polled: {process.communicate()}")
    # the poll line is logged while its tick is written: wait until the state database holds that poll
    state = ws.state.removeprefix("sqlite:///")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sqlite3.connect(state) as db:
            if db.execute("SELECT COUNT(*) FROM tc_polls").fetchone()[0]:
                break
        time.sleep(0.05)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    document = json.loads(stdout)
    assert document["status"] == "cancelled"
    assert ET.parse(junit).getroot().get("tests") is not None
    shown = in_process(ws, "show", document["run_id"], "--db", ws.state)
    assert shown.code == 0, shown.output
    assert shown.document["status"] == "cancelled"
    assert shown.document["stages"][0]["attempts"] >= 1
