"""``--log-format json`` as operators read it: the stderr of real ``trackcheck run`` and ``trackcheck serve``
processes, one JSON object per line, the lines of a run's polls naming its run id, plan and stage, a traceback
inside its line, and the password of a source URL on none of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.integration.http_server import HttpTestServer
from tests.ports import free_port

PASSWORD = "Quokka-pw-5521"
SCHEMA = {"type": "object", "required": ["order_no", "status"]}
RUN_PLAN = """
name: logged-orders
key: order_no
params:
  batch: {required: true}
sources:
  wh: {type: sql, url: "WAREHOUSE"}
expect:
  - {order_no: 1, status: paid}
stages:
  - name: warehouse
    source: wh
    query: SELECT order_no, status, batch FROM orders
    where: {batch: "{batch}"}
    compare: {with: expect, fields: [status]}
    schema: order.schema.json
"""
SERVED_PLAN = """
name: logged-served
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 200ms, timeout: 1m}
sources:
  api: {type: http, url: "BASE"}
expect:
  - {event_id: e1, event: view}
stages:
  - name: collector
    source: api
    request: {path: /events}
    records: items
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""


def trackcheck(*args: str) -> list[str]:
    return [sys.executable, "-m", "trackcheck", *args]


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as JSON (the test fails on the first that is not), each with the fields every
    line has: an ISO 8601 timestamp in UTC, the level, the logger and the message."""
    lines: list[dict[str, Any]] = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"a stderr line is not JSON: {line!r}")
        assert isinstance(record, dict), line
        assert datetime.fromisoformat(record["timestamp"]).utcoffset() == timedelta(0), line
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        assert record["logger"] and isinstance(record["message"], str), line
        lines.append(record)
    assert lines, "nothing on stderr"
    return lines


def wait_for(what: Callable[[], bool], timeout: float, failure: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, failure()
        time.sleep(0.1)


@pytest.fixture
def warehouse(postgres_url: str) -> Iterator[str]:
    """An empty ``orders`` table in a fresh PostgreSQL database; its URL with a password in it (the server
    trusts local connections, so the password is sent and ignored: a secret the logs must not show)."""
    engine = create_engine(postgres_url)
    with engine.begin() as db:
        db.execute(text("CREATE TABLE orders (order_no INTEGER, status TEXT, batch TEXT)"))
    engine.dispose()
    yield postgres_url.replace("postgresql+psycopg://postgres@", f"postgresql://postgres:{PASSWORD}@")


def test_a_verbose_json_run_names_its_run_plan_and_stage_and_keeps_a_traceback_in_one_line(
    tmp_path: Path, warehouse: str
) -> None:
    schema = tmp_path / "order.schema.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    plan = tmp_path / "orders.yaml"
    plan.write_text(RUN_PLAN.replace("WAREHOUSE", warehouse), encoding="utf-8")
    stderr = tmp_path / "stderr.log"
    args = ("run", str(plan), "-p", "batch=b1", "--db", f"sqlite:///{tmp_path / 'state.db'}")
    command = trackcheck("--log-format", "json", "-v", *args, "--interval", "200ms", "--timeout", "30s")
    with stderr.open("wb") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    try:
        # the stage waits (the table is empty); then the schema file is broken while it waits, and the order
        # arrives: validating it fails with an exception the engine logs with its traceback
        wait_for(lambda: '"logger": "trackcheck.poll"' in stderr.read_text(), 30, stderr.read_text)
        schema.write_text("{not json", encoding="utf-8")
        engine = create_engine(warehouse)
        with engine.begin() as db:
            db.execute(text("INSERT INTO orders VALUES (1, 'paid', 'b1')"))
        engine.dispose()
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    output = stderr.read_text()
    assert code == 3, output  # the stage ended in error: it could not be evaluated
    lines = json_lines(output)
    summary = next(line for line in lines if line["message"].startswith("ERROR logged-orders run "))
    run_id = summary["run_id"]
    assert summary["message"] == f"ERROR logged-orders run {run_id}" and summary["plan"] == "logged-orders"
    polls = [line for line in lines if line["logger"] == "trackcheck.poll"]
    assert len(polls) >= 2, output  # a waiting poll and the one that could not compare
    for poll in polls:
        assert (poll["run_id"], poll["plan"], poll["stage"]) == (run_id, "logged-orders", "warehouse"), poll
        assert poll["group"] and poll["runs"] == 1, poll
    assert any("outcome=waiting found=0" in poll["message"] for poll in polls), output
    [failure] = [line for line in lines if line["level"] == "ERROR" and line["logger"] == "trackcheck.poll"]
    assert failure["message"] == "cannot compare stage warehouse of plan logged-orders"
    assert (failure["run_id"], failure["plan"], failure["stage"]) == (run_id, "logged-orders", "warehouse")
    assert failure["exception"].startswith("Traceback (most recent call last):")
    assert "PlanError" in failure["exception"] and "is not JSON" in failure["exception"]
    progress = [line for line in lines if line["logger"] == "trackcheck.console" and "stage" in line]
    assert progress and all(line["run_id"] == run_id for line in progress), output
    assert PASSWORD not in output and "Quokka" not in output


@pytest.fixture
def collector() -> Iterator[HttpTestServer]:
    with HttpTestServer() as server:
        server.reply("/events", {"items": []})
        yield server


def test_serve_in_json_logs_its_own_gunicorns_and_the_submitted_runs_lines_as_json(
    tmp_path: Path, collector: HttpTestServer
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    base = collector.url.replace("//", f"//reader:{PASSWORD}@")
    (plans / "served.yaml").write_text(SERVED_PLAN.replace("BASE", base), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stderr = tmp_path / "serve.log"
    command = trackcheck(
        "--log-format", "json", "-v", "serve", "--port", str(port), "--db", f"sqlite:///{tmp_path / 'state.db'}",
        "--plans", str(plans),
    )  # fmt: skip
    env = {**os.environ, "TRACKCHECK_API_TOKEN": ""}
    with stderr.open("wb") as err:
        process = subprocess.Popen(command, stdout=err, stderr=err, env=env, start_new_session=True)
    try:

        def healthy() -> bool:
            assert process.poll() is None, stderr.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, stderr.read_text)
        answer = httpx.post(f"{url}/api/runs", json={"plan": "logged-served", "params": {"test_id": "t1"}}, timeout=10)
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["id"]
        collector.reply("/events", {"items": [{"event_id": "e1", "event": "view", "test_id": "t1"}]})

        def passed() -> bool:
            return bool(httpx.get(f"{url}/api/runs/{run_id}", timeout=10).json()["status"] == "passed")

        wait_for(passed, 60, stderr.read_text)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    output = stderr.read_text()
    lines = json_lines(output)  # stdout and stderr alike: the master's, gunicorn's and the worker's lines
    loggers = {line["logger"] for line in lines}
    assert {"trackcheck.console", "gunicorn.error", "gunicorn.access", "trackcheck.api"} <= loggers, loggers
    assert any(line["message"].startswith("trackcheck serving on") for line in lines)
    accepted = next(line for line in lines if line["logger"] == "trackcheck.api" and "accepted" in line["message"])
    assert (accepted["run_id"], accepted["plan"]) == (run_id, "logged-served"), accepted
    polls = [line for line in lines if line["logger"] == "trackcheck.poll" and line.get("run_id") == run_id]
    assert polls and all((p["plan"], p["stage"]) == ("logged-served", "collector") for p in polls), output
    assert any("outcome=passed" in poll["message"] for poll in polls), output
    access = [line["message"] for line in lines if line["logger"] == "gunicorn.access"]
    assert any('"POST /api/runs" 202' in message for message in access), access
    assert PASSWORD not in output and "Quokka" not in output


def run_trackcheck(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TRACKCHECK_API_TOKEN": "", **(env or {})}
    return subprocess.run(
        trackcheck(*args), capture_output=True, text=True, timeout=60, env=environment, cwd=cwd, check=False
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--log-format", "xml"), {}), ((), {"TRACKCHECK_LOG_FORMAT": "xml"})],
    ids=["option", "environment"],
)
def test_an_unknown_log_format_exits_2_naming_the_option(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    done = run_trackcheck(*args, "validate", "plan.yaml", cwd=tmp_path, env=env)

    assert done.returncode == 2, done.stderr
    assert "Invalid value for '--log-format' (env var: 'TRACKCHECK_LOG_FORMAT'): 'xml' is not one of" in done.stderr


def test_an_unknown_log_format_in_trackcheck_toml_exits_2_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "trackcheck.toml").write_text('log_format = "yaml"\n', encoding="utf-8")

    done = run_trackcheck("serve", "--db", f"sqlite:///{tmp_path / 'state.db'}", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert "ConfigError: invalid configuration: log_format: Input should be 'text' or 'json'" in done.stderr


def test_log_format_json_in_trackcheck_toml_makes_serves_lines_json_from_its_first(tmp_path: Path) -> None:
    """The configuration's own refusal (a public address without a token) is already a JSON line."""
    (tmp_path / "trackcheck.toml").write_text('log_format = "json"\nhost = "0.0.0.0"\n', encoding="utf-8")

    done = run_trackcheck("serve", "--db", f"sqlite:///{tmp_path / 'state.db'}", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    [refusal] = json_lines(done.stderr)
    assert refusal["level"] == "ERROR" and refusal["logger"] == "trackcheck.console"
    assert refusal["message"].startswith("ConfigError: field 'host': refusing to listen on 0.0.0.0")
