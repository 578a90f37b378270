"""``trackcheck run`` as a CI job sees it: heartbeat lines in a log without a terminal, JUnit and JSON reports
for every exit code (an invalid plan included), JUnit times, GitHub Actions annotations, and -v/-q after
the subcommand. Each test runs the real command as a subprocess over a JSONL file in its tmp_path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

PLAN = """\
name: ci-events
key: id
params:
  test_id: {required: true}
sources:
  events: {type: file, path: "${CI_EVENTS}"}
expect:
  - {id: e1, kind: view}
  - {id: e2, kind: click}
  - {id: e3, kind: buy}
stages:
  - name: collector
    source: events
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [kind]}
"""
COLLECTOR_LINE = 12  # the line of "  - name: collector" above
FAST = ("--interval", "200ms")


class Job:
    """A plan (its file name may hold ':' and ','), its JSONL events file and a state database."""

    def __init__(self, root: Path, plan_name: str = "plan.yaml", plan: str = PLAN) -> None:
        self.root = root
        self.events = root / "events.jsonl"
        self.events.touch()
        self.plan = root / plan_name
        self.plan.write_text(plan, encoding="utf-8")
        self.env = {**os.environ, "CI_EVENTS": str(self.events)}

    def emit(self, test_id: str, *events: dict[str, Any]) -> None:
        with self.events.open("a", encoding="utf-8") as out:
            for event in events:
                out.write(json.dumps({**event, "test_id": test_id}) + "\n")

    def command(self, *args: str) -> list[str]:
        """``trackcheck run PLAN --db ... ARGS``."""
        state = f"sqlite:///{self.root}/s.db"
        return [sys.executable, "-m", "trackcheck", "run", str(self.plan), "--db", state, *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The command with stdout and stderr captured (pipes: no terminal)."""
        return subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path)


@pytest.fixture
def later() -> Iterator[list[threading.Timer]]:
    timers: list[threading.Timer] = []
    yield timers
    for timer in timers:
        timer.cancel()


def test_a_waiting_run_without_a_terminal_prints_heartbeat_lines_saying_what_it_waits_for(
    job: Job, later: list[threading.Timer]
) -> None:
    job.emit("t1", {"id": "e1", "kind": "view"}, {"id": "e2", "kind": "click"})
    # the last event arrives about 2.5 s after the run's first poll; a heartbeat every second

    def last_event() -> None:
        job.emit("t1", {"id": "e3", "kind": "buy"})

    process = subprocess.Popen(
        job.command(
            "-p", "test_id=t1", *FAST, "--timeout", "30s", "--heartbeat", "1", "--junit", str(job.root / "r.xml")
        ),
        env=job.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:  # the first progress line: the run is being polled
        lines.append(line)
        if line.startswith("collector: waiting"):
            break
    timer = threading.Timer(2.5, last_event)
    later.append(timer)
    timer.start()
    _, rest = process.communicate(timeout=60)
    stderr = "".join(lines) + rest

    assert process.returncode == 0, stderr
    beats = [line for line in stderr.splitlines() if re.match(r"\d\d:\d\d:\d\d collector: waiting ", line)]
    assert len(beats) >= 2, stderr
    for beat in beats:
        assert re.fullmatch(
            r"\d\d:\d\d:\d\d collector: waiting \d+s \(poll \d+, found 2/3; waiting for e3\); times out in \d+s", beat
        ), beat
    assert "\x1b" not in stderr  # plain text: no ANSI codes in a log
    assert "collector: passed (poll" in stderr
    # the stage waited at least as long as the heartbeats say, and the JUnit report times it so
    suite = ET.parse(job.root / "r.xml").getroot()
    case = suite.find("testcase[@name='collector']")
    assert case is not None
    assert 2.0 <= float(case.get("time") or 0) <= 30
    assert float(suite.get("time") or 0) >= float(case.get("time") or 0)


def test_heartbeat_0_turns_them_off(job: Job) -> None:
    job.emit("t0", {"id": "e1", "kind": "view"})

    done = job.run("-p", "test_id=t0", *FAST, "--timeout", "2500ms", "--heartbeat", "0")

    assert done.returncode == 1, done.stderr
    assert "collector: waiting (poll" in done.stderr  # the per-change progress lines stay
    assert not re.search(r"^\d\d:\d\d:\d\d collector", done.stderr, re.MULTILINE), done.stderr


def test_an_invalid_plan_exits_2_with_a_junit_error_and_a_json_document(job: Job) -> None:
    job.plan.write_text(PLAN.replace("source: events", "source: evnts"), encoding="utf-8")
    report = job.root / "report.xml"

    done = job.run("-p", "test_id=t1", "--junit", str(report), "--json")

    assert done.returncode == 2, done.stderr
    message = "plan 'ci-events': stages[0] (collector).source: unknown source 'evnts' (sources: events)"
    assert json.loads(done.stdout) == {
        "run_id": None,
        "plan": "ci-events",
        "plan_file": str(job.plan),
        "status": "invalid",
        "params": {"test_id": "t1"},
        "stages": [],
        "error": {"type": "PlanError", "message": message, "exit_code": 2, "context": {"plan": "ci-events"}},
    }
    assert f"error: PlanError: {message}" in done.stderr
    suite = ET.parse(report).getroot()
    assert (suite.get("name"), suite.get("tests"), suite.get("errors"), suite.get("failures")) == (
        "ci-events",
        "1",
        "1",
        "0",
    )
    cases = list(suite.iter("testcase"))
    assert [case.get("name") for case in cases] == ["ci-events"]
    error = cases[0].find("error")
    assert error is not None
    assert (error.get("type"), error.get("message")) == ("PlanError", message)


def test_an_unreadable_plan_file_and_a_bad_parameter_still_write_both_reports(job: Job) -> None:
    job.plan.rename(job.root / "elsewhere.yaml")
    report = job.root / "missing.xml"

    gone = job.run("-p", "test_id=t1", "--junit", str(report), "--json")
    syntax = job.run("-p", "test_id", "--json", "--junit", str(job.root / "syntax.xml"))  # not NAME=VALUE

    assert gone.returncode == 2
    document = json.loads(gone.stdout)
    assert (document["status"], document["plan"], document["error"]["type"]) == (
        "invalid",
        str(job.plan),
        "PlanError",
    )
    assert "cannot read plan file" in document["error"]["message"]
    assert ET.parse(report).getroot().find("testcase/error") is not None
    assert syntax.returncode == 2
    assert json.loads(syntax.stdout)["error"]["message"] == "Invalid value for -p/--param: 'test_id' is not NAME=VALUE"
    assert ET.parse(job.root / "syntax.xml").getroot().get("errors") == "1"


def test_junit_times_and_timestamp_are_present_and_plausible(job: Job) -> None:
    job.emit("t2", {"id": "e1", "kind": "view"}, {"id": "e2", "kind": "click"}, {"id": "e3", "kind": "buy"})
    before = datetime.now().astimezone()

    done = job.run("-p", "test_id=t2", *FAST, "--timeout", "10s", "--junit", str(job.root / "r.xml"))

    assert done.returncode == 0, done.stderr
    suite = ET.parse(job.root / "r.xml").getroot()
    stamp = datetime.fromisoformat(suite.get("timestamp") or "")
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=2) <= stamp <= datetime.now().astimezone()
    case = suite.find("testcase")
    assert case is not None
    assert 0 <= float(case.get("time") or -1) < 10
    assert re.fullmatch(r"\d+\.\d{3}", suite.get("time") or "")


def test_github_annotations_point_at_the_stage_line_with_escaped_message_and_properties(tmp_path: Path) -> None:
    job = Job(tmp_path, plan_name="plan:v1,ci.yaml")  # a file name that needs escaping as a property
    job.emit("t3", {"id": "e1", "kind": "view"}, {"id": "e2", "kind": "cli,ck: 100%"})

    done = job.run("-p", "test_id=t3", *FAST, "--timeout", "1s", "--annotations", "github", "--json")

    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["status"] == "failed"  # stdout stays one JSON document
    commands = [line for line in done.stderr.splitlines() if line.startswith("::")]
    assert len(commands) == 1, done.stderr
    file = str(job.plan).replace(":", "%3A").replace(",", "%2C")
    prefix = f"::error file={file},line={COLLECTOR_LINE},title=trackcheck%3A collector failed::"
    assert commands[0].startswith(prefix), commands[0]
    message = commands[0].removeprefix(prefix)
    # one fact per line (an escaped newline), the data's ':' and ',' as they are, '%' escaped
    facts = message.split("%0A")
    assert facts[1] == "mismatch e2.kind: expected 'click', got 'cli,ck: 100%25'", message
    assert "missing: e3" in facts
    assert "\n" not in message and "100%'" not in message


def test_verbose_and_quiet_are_accepted_after_the_subcommand(job: Job) -> None:
    job.emit("t4", {"id": "e1", "kind": "view"}, {"id": "e2", "kind": "click"}, {"id": "e3", "kind": "buy"})

    verbose = job.run("-p", "test_id=t4", *FAST, "--timeout", "10s", "-v")
    quiet = job.run("-p", "test_id=t4", *FAST, "--timeout", "10s", "-q")
    both = job.run("-p", "test_id=t4", "-q", "-v")

    assert verbose.returncode == 0, verbose.stderr
    assert "INFO" in verbose.stderr and "outcome=passed" in verbose.stderr  # -v: one log line per poll
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines() == [quiet.stderr.splitlines()[0]]
    assert re.fullmatch(r"PASSED ci-events run [0-9a-f]{32}\n", quiet.stderr), quiet.stderr
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_quiet_keeps_the_reason_of_a_failed_stage(job: Job) -> None:
    job.emit("t5", {"id": "e1", "kind": "view"})

    done = job.run("-p", "test_id=t5", *FAST, "--timeout", "1s", "-q")

    assert done.returncode == 1
    first, *rest = done.stderr.splitlines()
    assert first.startswith("FAILED ci-events run ")
    assert len(rest) == 1 and rest[0].startswith("  collector: ") and "e2" in rest[0], done.stderr
